//! The `email` step: a plain-text message through an SMTP relay, with
//! lettre.
//!
//! The relay is the server's (`[connect.smtp]`) or a team's `smtp`
//! credential. Its host is resolved here and every address passes the
//! same SSRF policy as HTTP steps; the connection goes to the checked
//! address (the name is kept for TLS verification), so a DNS answer that
//! changes in between cannot point it inside. Plain SMTP (no TLS) is
//! allowed only to an internal address the operator allow-listed, so a
//! password never crosses a network in the clear.
//!
//! Idempotency: a step recorded as finished never runs again, and the
//! message's `Message-ID` is derived from the step's idempotency key, so a
//! resumed run that sends again (its worker stopped after the relay took
//! the message but before the step was recorded) sends the same message,
//! which receiving systems recognise as a repeat.

use std::net::SocketAddr;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Mailboxes};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::credentials::CredentialKind;
use crate::engine::{Produced, StepFailure};
use crate::expr::Expressions;
use crate::outbound::{OutboundError, OutboundPolicy, internal_reason};
use crate::service::Connect;

/// Recipients one message may have.
pub const MAX_RECIPIENTS: usize = 50;
/// The longest body, in bytes.
const MAX_BODY_BYTES: usize = 512 * 1024;

/// Sends an e-mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailStep {
    /// Recipients: templates, each giving one address (1–50).
    pub to: Vec<String>,
    /// A template for the subject.
    pub subject: String,
    /// A template for the plain-text body.
    pub body: String,
    /// The name of a team `smtp` credential (relay, sender and password);
    /// without it the server's `[connect.smtp]` relay is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl EmailStep {
    /// Problems on save, as (field, message).
    pub(crate) fn check(
        &self,
        x: &Expressions,
        credential_exists: &dyn Fn(&str) -> bool,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.to.is_empty() || self.to.len() > MAX_RECIPIENTS {
            out.push((
                "to".into(),
                format!("from 1 to {MAX_RECIPIENTS} recipients"),
            ));
        }
        for (i, t) in self.to.iter().enumerate() {
            if let Err(e) = x.check_template(t) {
                out.push((
                    format!("to[{i}]"),
                    format!("the template does not parse: {e}"),
                ));
            }
        }
        for (field, t) in [("subject", &self.subject), ("body", &self.body)] {
            if let Err(e) = x.check_template(t) {
                out.push((field.into(), format!("the template does not parse: {e}")));
            }
        }
        if let Some(c) = &self.credential
            && !credential_exists(c)
        {
            out.push((
                "credential".into(),
                format!("the team has no credential `{c}`"),
            ));
        }
        out
    }
}

/// How a relay is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// No TLS: only to an allow-listed internal address.
    None,
    /// STARTTLS, required.
    Starttls,
    /// Implicit TLS from the first byte.
    Tls,
}

impl SmtpSecurity {
    /// Parses `none`, `starttls` or `tls`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(SmtpSecurity::None),
            "starttls" => Some(SmtpSecurity::Starttls),
            "tls" => Some(SmtpSecurity::Tls),
            _ => None,
        }
    }
}

/// An SMTP relay and the sender it sends as.
#[derive(Clone)]
pub struct SmtpRelay {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS.
    pub security: SmtpSecurity,
    /// A PEM CA the relay's certificate must chain to (without it, the
    /// system's roots).
    pub ca_pem: Option<Vec<u8>>,
    /// SMTP AUTH user and password.
    pub credentials: Option<(String, Zeroizing<String>)>,
    /// The sender address.
    pub from: String,
    /// Time allowed for one delivery.
    pub timeout: Duration,
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("from", &self.from)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// Checks a sender or recipient address.
pub fn parse_mailbox(address: &str) -> Result<Mailbox, String> {
    address
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| format!("`{address}` is not an e-mail address: {e}"))
}

/// One message to send.
pub(crate) struct Outgoing {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// Without the angle brackets.
    pub message_id: String,
}

/// Why a delivery did not happen.
pub(crate) enum DeliveryError {
    /// The SSRF policy refused the relay.
    Refused(String),
    /// The message or the relay settings are wrong; trying again will not
    /// help.
    Permanent(String),
    /// The relay could not be reached or deferred.
    Transient(String),
}

/// Sends one message through `relay`; answers the relay's reply code.
pub(crate) async fn deliver(
    policy: &OutboundPolicy,
    relay: &SmtpRelay,
    mail: &Outgoing,
) -> Result<String, DeliveryError> {
    let addr: SocketAddr =
        policy
            .resolve_host(&relay.host, relay.port)
            .await
            .map_err(|e| match e {
                OutboundError::Refused(r) => DeliveryError::Refused(r),
                OutboundError::Failed(r) => DeliveryError::Transient(r),
            })?;
    let tls_params = || {
        let mut b = TlsParameters::builder(relay.host.clone());
        if let Some(ca) = &relay.ca_pem {
            let cert = Certificate::from_pem(ca)
                .map_err(|e| DeliveryError::Permanent(format!("the relay's CA: {e}")))?;
            b = b
                .certificate_store(CertificateStore::None)
                .add_root_certificate(cert);
        }
        b.build_rustls()
            .map_err(|e| DeliveryError::Permanent(format!("TLS: {e}")))
    };
    let tls = match relay.security {
        // Passing the policy with an internal address means the operator
        // allow-listed it; a public relay needs TLS.
        SmtpSecurity::None if internal_reason(addr.ip()).is_some() => Tls::None,
        SmtpSecurity::None => {
            return Err(DeliveryError::Permanent(format!(
                "plain SMTP to {} is refused: use starttls or tls for a relay outside the allow-listed ranges",
                relay.host
            )));
        }
        SmtpSecurity::Starttls => Tls::Required(tls_params()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls_params()?),
    };
    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(addr.ip().to_string())
            .port(addr.port())
            .tls(tls)
            .timeout(Some(relay.timeout));
    if let Some((user, password)) = &relay.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), password.to_string()));
    }
    let transport = builder.build();
    let message = compose(relay, mail).map_err(DeliveryError::Permanent)?;
    match transport.send(message).await {
        Ok(reply) => Ok(reply.code().to_string()),
        Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
        Err(e) => Err(DeliveryError::Transient(e.to_string())),
    }
}

fn compose(relay: &SmtpRelay, mail: &Outgoing) -> Result<Message, String> {
    let from = parse_mailbox(&relay.from)?;
    let mut to = Mailboxes::new();
    for t in &mail.to {
        to.push(parse_mailbox(t)?);
    }
    let subject: String = mail.subject.chars().filter(|c| !c.is_control()).collect();
    Message::builder()
        .from(from)
        .mailbox(lettre::message::header::To::from(to))
        .subject(subject)
        .message_id(Some(format!("<{}>", mail.message_id)))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| e.to_string())
}

impl Connect {
    /// The relay a step sends through: a team credential, else the
    /// server's. The password joins `secrets` so run records never hold it.
    pub(crate) async fn smtp_relay(
        &self,
        team: kura_types::TeamId,
        credential: Option<&str>,
        secrets: &mut Vec<String>,
    ) -> Result<SmtpRelay, StepFailure> {
        let Some(name) = credential else {
            return self.inner.config.smtp.clone().ok_or_else(|| {
                StepFailure::fatal(
                    "no SMTP relay: the server has no [connect.smtp] and the step names no smtp credential",
                )
            });
        };
        let secret = self
            .open_credential(team, name)
            .await
            .map_err(|e| StepFailure::fatal(e.to_string()))?;
        if secret.kind != CredentialKind::Smtp {
            return Err(StepFailure::fatal(format!(
                "credential `{name}` is not an smtp credential"
            )));
        }
        secrets.push(secret.value.as_str().to_owned());
        let s = &secret.settings;
        Ok(SmtpRelay {
            host: s.host.clone().unwrap_or_default(),
            port: s.port.unwrap_or(587),
            security: s.security.unwrap_or(SmtpSecurity::Starttls),
            ca_pem: None,
            credentials: s
                .username
                .clone()
                .map(|u| (u, Zeroizing::new(secret.value.as_str().to_owned()))),
            from: s.from.clone().unwrap_or_default(),
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends through a relay, recording an SSRF refusal as a security
    /// event; the error is the step's.
    pub(crate) async fn send_mail(
        &self,
        run: &kura_store::connect::RunRecord,
        relay: &SmtpRelay,
        mail: &Outgoing,
    ) -> Result<String, StepFailure> {
        match deliver(&self.inner.config.outbound, relay, mail).await {
            Ok(code) => Ok(code),
            Err(DeliveryError::Refused(reason)) => {
                let target = format!("smtp://{}:{}", relay.host, relay.port);
                self.refused(run, &target, &reason).await;
                Err(StepFailure::fatal(format!(
                    "outbound call refused: {reason}"
                )))
            }
            Err(DeliveryError::Permanent(m)) => Err(StepFailure::fatal(m)),
            Err(DeliveryError::Transient(m)) => Err(StepFailure {
                message: m,
                retryable: true,
            }),
        }
    }

    /// Runs an `email` step.
    pub(crate) async fn email_step(
        &self,
        run: &kura_store::connect::RunRecord,
        spec: &EmailStep,
        scope: &Value,
        idempotency_key: Option<&str>,
        secrets: &mut Vec<String>,
        recorded: &mut Value,
    ) -> Result<Produced, StepFailure> {
        let x = &self.inner.expr;
        let render = |s: &str| x.render(s, scope).map_err(StepFailure::fatal);
        let mut to = Vec::with_capacity(spec.to.len());
        for t in &spec.to {
            let address = render(t)?.trim().to_owned();
            parse_mailbox(&address).map_err(StepFailure::fatal)?;
            to.push(address);
        }
        let subject = render(&spec.subject)?;
        let body = render(&spec.body)?;
        if body.len() > MAX_BODY_BYTES {
            return Err(StepFailure::fatal(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        let key = idempotency_key.unwrap_or_default();
        let digest = kura_crypto::digest::sha256(key.as_bytes());
        let message_id = format!("{}@kura-connect", hex::encode(&digest[..16]));
        *recorded = json!({
            "to": to, "subject": subject, "credential": spec.credential,
        });
        let relay = self
            .smtp_relay(run.team, spec.credential.as_deref(), secrets)
            .await?;
        let mail = Outgoing {
            to: to.clone(),
            subject,
            body,
            message_id: message_id.clone(),
        };
        let reply = self.send_mail(run, &relay, &mail).await?;
        Ok(Produced::value(json!({
            "to": to,
            "message_id": message_id,
            "relay": format!("{}:{}", relay.host, relay.port),
            "reply": reply,
        })))
    }
}
