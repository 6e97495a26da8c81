//! Incident notifications by e-mail, through an SMTP relay.
//!
//! One message per notification, plain text, with the notification id in a
//! `X-Kura-Notification` header so recipients' filters can drop repeats.
//! The relay is reached with TLS (`tls`: implicit TLS, `starttls`: required
//! STARTTLS) verified against a configured CA only, or without TLS only on a
//! loopback address (a local relay that forwards on its own).

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use time::format_description::well_known::Rfc3339;

use super::notify::{DeliveryTry, NotificationChannel, NotificationMessage};

/// How the relay is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain SMTP; only to a loopback address.
    None,
    /// STARTTLS, required.
    StartTls,
    /// Implicit TLS from the first byte.
    Tls,
}

/// One e-mail channel.
#[derive(Clone)]
pub struct EmailConfig {
    /// The channel name.
    pub name: String,
    /// The relay's host name or address.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// How the relay is reached.
    pub security: SmtpSecurity,
    /// PEM CA the relay's certificate must chain to (required with TLS).
    pub ca_pem: Option<Vec<u8>>,
    /// SMTP AUTH user and password, if the relay wants them.
    pub credentials: Option<(String, zeroize::Zeroizing<String>)>,
    /// The sender address.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// Time allowed for one delivery.
    pub timeout: Duration,
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field("to", &self.to)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Why an e-mail channel cannot work.
#[derive(Debug, thiserror::Error)]
#[error("e-mail channel `{name}`: {detail}")]
pub struct EmailConfigError {
    name: String,
    detail: String,
}

/// Notifications as e-mail through one relay.
pub struct EmailChannel {
    name: String,
    target: String,
    from: Mailbox,
    to: Mailboxes,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl EmailChannel {
    /// Checks the configuration and builds the SMTP client (it connects
    /// only when sending).
    pub fn new(config: EmailConfig) -> Result<Self, EmailConfigError> {
        let bad = |detail: String| EmailConfigError {
            name: config.name.clone(),
            detail,
        };
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| bad(format!("from `{}`: {e}", config.from)))?;
        if config.to.is_empty() {
            return Err(bad("needs at least one recipient".into()));
        }
        let mut to = Mailboxes::new();
        for addr in &config.to {
            to.push(
                addr.parse::<Mailbox>()
                    .map_err(|e| bad(format!("recipient `{addr}`: {e}")))?,
            );
        }
        let tls = match config.security {
            SmtpSecurity::None if is_loopback(&config.host) => Tls::None,
            SmtpSecurity::None => {
                return Err(bad(
                    "plain SMTP is allowed only to a loopback relay; use starttls or tls".into(),
                ));
            }
            SmtpSecurity::StartTls | SmtpSecurity::Tls => {
                let ca = config
                    .ca_pem
                    .as_deref()
                    .ok_or_else(|| bad("TLS needs ca_file: no root store is bundled".into()))?;
                let params = TlsParameters::builder(config.host.clone())
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(
                        Certificate::from_pem(ca).map_err(|e| bad(format!("ca_file: {e}")))?,
                    )
                    .build_rustls()
                    .map_err(|e| bad(format!("TLS: {e}")))?;
                if config.security == SmtpSecurity::Tls {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
        }
        Ok(Self {
            target: format!(
                "smtp://{}:{} → {}",
                config.host,
                config.port,
                config.to.join(", ")
            ),
            name: config.name,
            from,
            to,
            transport: builder.build(),
        })
    }

    fn message(&self, m: &NotificationMessage) -> Result<Message, String> {
        let created_at = m.created_at.format(&Rfc3339).unwrap_or_default();
        let body = format!(
            "{}\n\nIncident: {}\nSeverity: {}\nReason: {}\nQueued: {created_at}\nNotification: {}\n",
            m.text, m.incident, m.severity, m.reason, m.id
        );
        let subject = format!(
            "[Kura {}] {}",
            m.severity.to_uppercase(),
            m.title
                .chars()
                .filter(|c| !c.is_control())
                .collect::<String>()
        );
        Message::builder()
            .from(self.from.clone())
            .mailbox(lettre::message::header::To::from(self.to.clone()))
            .subject(subject)
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("X-Kura-Notification"),
                m.id.to_string(),
            ))
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl NotificationChannel for EmailChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "email"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    async fn send(&self, m: &NotificationMessage) -> DeliveryTry {
        let message = match self.message(m) {
            Ok(message) => message,
            Err(e) => return DeliveryTry::failed(e),
        };
        match self.transport.send(message).await {
            Ok(response) => DeliveryTry {
                ok: true,
                status: response.code().to_string().parse().ok(),
                error: None,
            },
            Err(e) => DeliveryTry {
                ok: false,
                status: e.status().and_then(|c| c.to_string().parse().ok()),
                error: Some(e.to_string()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str, security: SmtpSecurity) -> EmailConfig {
        EmailConfig {
            name: "sec".into(),
            host: host.into(),
            port: 25,
            security,
            ca_pem: None,
            credentials: None,
            from: "kura@example.org".into(),
            to: vec!["security@example.org".into()],
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn plain_smtp_only_to_loopback_and_tls_only_with_a_ca() {
        assert!(EmailChannel::new(config("127.0.0.1", SmtpSecurity::None)).is_ok());
        assert!(EmailChannel::new(config("localhost", SmtpSecurity::None)).is_ok());
        let e = EmailChannel::new(config("mail.example.org", SmtpSecurity::None)).unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
        let e = EmailChannel::new(config("mail.example.org", SmtpSecurity::Tls)).unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        let mut c = config("127.0.0.1", SmtpSecurity::None);
        c.to.clear();
        assert!(EmailChannel::new(c).is_err());
        let mut c = config("127.0.0.1", SmtpSecurity::None);
        c.from = "not an address".into();
        assert!(
            EmailChannel::new(c)
                .unwrap_err()
                .to_string()
                .contains("from")
        );
    }
}
