//! The hardened baseline, as checks: `kura doctor` prints them all, and a
//! start with `env = production` refuses when any baseline check fails.
//!
//! Each check says pass, warn or fail, and what to do about anything but a
//! pass. The file checks run on the data directory as it is, before a start
//! repairs modes (production refuses instead of repairing). Checks of
//! state (the firewall, operators) need the opened installation. The
//! dependency-advisory check ([`advisory_check`]) is `kura doctor`'s alone:
//! an advisory published after a release must not stop a running
//! service from restarting.

mod advisories;

pub use advisories::{advisory_check, cargo_home};

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use kura_config::{Config, Environment};
use kura_crypto::LocalKms;
use kura_store::DataDir;
use serde::Serialize;

use crate::bootstrap::Installation;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Meets the baseline.
    Pass,
    /// Works, but weaker than it should be.
    Warn,
    /// Below the baseline: production refuses to start.
    Fail,
}

impl Status {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id (`files.master_key`, `tls.certificate`, …).
    pub id: &'static str,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub summary: String,
    /// What to do, unless it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
}

fn pass(id: &'static str, summary: impl Into<String>) -> Check {
    Check {
        id,
        status: Status::Pass,
        summary: summary.into(),
        remediation: None,
    }
}

fn flag(
    id: &'static str,
    status: Status,
    summary: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        id,
        status,
        summary: summary.into(),
        remediation: Some(fix.into()),
    }
}

/// Production fails what development only warns about.
fn severe(config: &Config) -> Status {
    if config.env == Environment::Production {
        Status::Fail
    } else {
        Status::Warn
    }
}

/// Checks of the configuration and the files, without opening anything.
pub fn file_checks(config: &Config, now: time::OffsetDateTime) -> Vec<Check> {
    let dir = DataDir::new(&config.data_dir);
    let mut checks = Vec::new();
    let private = [
        ("files.data_dir", dir.root().to_owned(), true),
        ("files.master_key", dir.master_key_file(), false),
        ("files.platform_key", dir.platform_key_file(), false),
        ("files.platform_db", dir.platform_db(), false),
        (
            "files.tls_key",
            config
                .tls
                .key_file
                .clone()
                .unwrap_or_else(|| dir.tls_dir().join("key.pem")),
            false,
        ),
    ];
    for (id, path, is_dir) in private {
        checks.push(mode_check(id, &path, is_dir));
    }
    checks.push(tree_check(&dir));
    checks.push(sealing(config, &dir));
    checks.push(pass(
        "tls.protocols",
        format!(
            "TLS {} and newer only, ECDHE key exchange with AEAD ciphers (nothing weaker exists in Kura)",
            match config.tls.min_version {
                kura_config::TlsVersion::V1_2 => "1.2",
                kura_config::TlsVersion::V1_3 => "1.3",
            }
        ),
    ));
    checks.push(certificate(config, &dir, now));
    let verbose = config.log.level.split(',').any(|d| {
        let lvl = d
            .rsplit('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        lvl == "debug" || lvl == "trace"
    });
    checks.push(if verbose {
        flag(
            "logging.level",
            severe(config),
            format!(
                "log.level is `{}`: debug and trace may write request details",
                config.log.level
            ),
            "set log.level = \"info\"",
        )
    } else {
        pass(
            "logging.level",
            format!("log.level is `{}`", config.log.level),
        )
    });
    checks.push(if config.edge.enabled {
        pass(
            "edge.enabled",
            "the firewall, rate limits and WAF inspect every request",
        )
    } else {
        flag(
            "edge.enabled",
            severe(config),
            "edge.enabled = false: requests reach handlers uninspected",
            "remove edge.enabled = false (it exists only for benchmarks)",
        )
    });
    let e = &config.events.export;
    let sinks = e.jsonl.len() + e.webhook.len() + e.syslog.len();
    checks.push(if sinks > 0 {
        pass("events.export", format!("{sinks} security event export(s) configured"))
    } else {
        flag(
            "events.export",
            Status::Warn,
            "security events stay only in the local log",
            "configure [[events.export.syslog]], [[events.export.webhook]] or [[events.export.jsonl]] so a separate system holds a copy",
        )
    });
    checks.push(flag(
        "backups",
        Status::Warn,
        "Kura does not schedule backups itself yet",
        "back up the data directory with your own tooling, and master.key (with its passphrase) separately",
    ));
    checks
}

/// Every file and directory under the data directory (apps' databases,
/// containers, exports): none may be open to other users, whatever the
/// data directory's own mode is today. The generated TLS certificate
/// (`tls/cert*`) is public by nature.
fn tree_check(dir: &DataDir) -> Check {
    const ID: &str = "files.data_tree";
    let root = dir.root();
    let tls = dir.tls_dir();
    let mut open = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            // Symbolic links are judged by their own entry, not followed.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            seen += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
            let public = dir == tls && entry.file_name().to_string_lossy().starts_with("cert");
            if !public && !meta.is_symlink() && meta.permissions().mode() & 0o007 != 0 {
                open.push(entry.path());
            }
        }
    }
    if open.is_empty() {
        return pass(
            ID,
            format!(
                "none of the {seen} entries under {} is open to other users",
                root.display()
            ),
        );
    }
    let shown: Vec<String> = open
        .iter()
        .take(5)
        .map(|p| p.display().to_string())
        .collect();
    flag(
        ID,
        Status::Fail,
        format!(
            "{} entries under {} are open to other users: {}{}",
            open.len(),
            root.display(),
            shown.join(", "),
            if open.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ),
        format!("chmod -R o-rwx {}", root.display()),
    )
}

fn mode_check(id: &'static str, path: &Path, is_dir: bool) -> Check {
    let Ok(meta) = std::fs::metadata(path) else {
        return pass(
            id,
            format!(
                "{} does not exist yet (created private on first run)",
                path.display()
            ),
        );
    };
    let mode = meta.permissions().mode() & 0o777;
    let want = if is_dir { 0o700 } else { 0o600 };
    if mode & 0o007 != 0 {
        flag(
            id,
            Status::Fail,
            format!(
                "{} has mode {mode:04o}: other users can reach it",
                path.display()
            ),
            format!("chmod {want:o} {}", path.display()),
        )
    } else if mode & 0o070 != 0 {
        flag(
            id,
            Status::Warn,
            format!(
                "{} has mode {mode:04o}: its group can reach it",
                path.display()
            ),
            format!("chmod {want:o} {}", path.display()),
        )
    } else {
        pass(id, format!("{} has mode {mode:04o}", path.display()))
    }
}

fn sealing(config: &Config, dir: &DataDir) -> Check {
    let path = dir.master_key_file();
    if !path.exists() {
        return flag(
            "keys.sealing",
            Status::Warn,
            "no master key yet",
            "the first start creates it; seal it afterwards with `kura keys seal`",
        );
    }
    match LocalKms::file_is_sealed(&path) {
        Ok(true) => pass(
            "keys.sealing",
            "the master key file is sealed with a passphrase",
        ),
        Ok(false) if config.keys.local.require_sealed => flag(
            "keys.sealing",
            Status::Fail,
            "keys.local.require_sealed is set but the master key file is not sealed",
            "run `kura keys seal`",
        ),
        Ok(false) => flag(
            "keys.sealing",
            Status::Warn,
            "the master key file is not sealed: anyone who copies the data directory can read it",
            "run `kura keys seal` and set keys.local.require_sealed = true",
        ),
        Err(e) => flag(
            "keys.sealing",
            Status::Fail,
            format!("the master key file cannot be read: {e}"),
            "restore master.key from your key backup",
        ),
    }
}

fn certificate(config: &Config, dir: &DataDir, now: time::OffsetDateTime) -> Check {
    let (path, generated) = match &config.tls.cert_file {
        Some(p) => (p.clone(), false),
        None => (dir.tls_dir().join("cert.pem"), true),
    };
    let Ok(pem) = std::fs::read(&path) else {
        return if generated {
            flag(
                "tls.certificate",
                Status::Warn,
                "no certificate configured; a self-signed one for localhost is generated",
                "set tls.cert_file and tls.key_file to a certificate clients trust",
            )
        } else {
            flag(
                "tls.certificate",
                Status::Fail,
                format!("{} cannot be read", path.display()),
                "check tls.cert_file",
            )
        };
    };
    let expiry = x509_parser::pem::parse_x509_pem(&pem)
        .ok()
        .and_then(|(_, p)| {
            p.parse_x509()
                .ok()
                .map(|c| c.validity().not_after.timestamp())
        });
    let Some(not_after) = expiry else {
        return flag(
            "tls.certificate",
            Status::Fail,
            format!("{} is not a PEM certificate", path.display()),
            "check tls.cert_file",
        );
    };
    let days = (not_after - now.unix_timestamp()) / 86_400;
    if days < 0 {
        flag(
            "tls.certificate",
            Status::Fail,
            format!("{} expired {} days ago", path.display(), -days),
            "renew the certificate",
        )
    } else if days < 30 {
        flag(
            "tls.certificate",
            Status::Warn,
            format!("{} expires in {days} days", path.display()),
            "renew the certificate soon",
        )
    } else if generated {
        // Behind a load balancer that re-encrypts, a self-signed
        // certificate can be right; clients that reach Kura directly
        // need one they trust.
        flag(
            "tls.certificate",
            Status::Warn,
            format!("a generated self-signed certificate (valid {days} more days) is served"),
            "set tls.cert_file and tls.key_file to a certificate clients trust",
        )
    } else {
        pass(
            "tls.certificate",
            format!("{} is valid for {days} more days", path.display()),
        )
    }
}

/// Checks of the opened installation's state.
pub async fn state_checks(config: &Config, installation: &Installation) -> Vec<Check> {
    let mut checks = Vec::new();
    let snapshot = installation.edge.snapshot();
    let bind = config.server.bind.ip();
    let guarded = snapshot.platform_allow_list() || !config.edge.trusted_proxies.is_empty();
    checks.push(if bind.is_loopback() {
        pass("edge.firewall", format!("listening on loopback ({bind}) only"))
    } else if guarded {
        pass("edge.firewall", "a platform allow list or trusted proxies restrict who reaches the listener")
    } else {
        flag(
            "edge.firewall",
            severe(config),
            format!("listening on {bind} with no platform allow list and no trusted proxies"),
            "PUT /api/v1/edge/firewall with an allow list, set edge.trusted_proxies to your load balancer, or bind to a private address",
        )
    });
    let operators = installation
        .identity_store()
        .count_accounts("operator")
        .await;
    checks.push(match operators {
        Ok(0) => flag(
            "identity.operator_mfa",
            Status::Warn,
            "no operator account exists yet",
            "create the first operator with the setup link `kura serve` prints",
        ),
        Ok(n) => pass(
            "identity.operator_mfa",
            format!("{n} operator account(s); every operator role requires an MFA-verified session (the policy has no switch to turn this off)"),
        ),
        Err(e) => flag("identity.operator_mfa", Status::Fail, format!("operators cannot be counted: {e}"), "check the platform database"),
    });
    checks
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks.iter().find(|c| c.id == id).unwrap()
    }

    #[test]
    fn loose_modes_fail_and_tight_ones_pass() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key = dir.join("master.key");
        std::fs::write(&key, b"x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = file_checks(&config(&dir), time::OffsetDateTime::now_utc());
        let k = find(&c, "files.master_key");
        assert_eq!(k.status, Status::Fail);
        assert!(
            k.remediation.as_deref().unwrap().starts_with("chmod 600"),
            "{k:?}"
        );
        assert_eq!(find(&c, "files.data_dir").status, Status::Pass);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let c = file_checks(&config(&dir), time::OffsetDateTime::now_utc());
        assert_eq!(find(&c, "files.master_key").status, Status::Warn);
        assert!(failed(&[find(&c, "backups").clone(), k.clone()]));
        assert_eq!(find(&c, "files.data_tree").status, Status::Pass);
        // An app's database deep in the tree, readable by anyone.
        let apps = dir.join("apps").join("host");
        std::fs::create_dir_all(&apps).unwrap();
        std::fs::set_permissions(&apps, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(apps.join("app.db"), b"x").unwrap();
        std::fs::set_permissions(apps.join("app.db"), std::fs::Permissions::from_mode(0o604))
            .unwrap();
        let c = file_checks(&config(&dir), time::OffsetDateTime::now_utc());
        let t = find(&c, "files.data_tree");
        assert_eq!(t.status, Status::Fail, "{t:?}");
        assert!(t.summary.contains("app.db"), "{t:?}");
    }

    #[test]
    fn production_fails_what_development_warns_about() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = config(tmp.path());
        c.log.level = "debug".into();
        assert_eq!(
            find(
                &file_checks(&c, time::OffsetDateTime::now_utc()),
                "logging.level"
            )
            .status,
            Status::Warn
        );
        c.env = Environment::Production;
        assert_eq!(
            find(
                &file_checks(&c, time::OffsetDateTime::now_utc()),
                "logging.level"
            )
            .status,
            Status::Fail
        );
        assert_eq!(
            find(
                &file_checks(&c, time::OffsetDateTime::now_utc()),
                "tls.certificate"
            )
            .status,
            Status::Warn
        );
    }
}
