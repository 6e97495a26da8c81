//! Dependency advisories, checked offline: the crates Kura was built from
//! (its `Cargo.lock`, compiled in) against a local copy of the RustSec
//! advisory database, as `cargo audit` (`~/.cargo/advisory-db`) and
//! `cargo deny` (`~/.cargo/advisory-dbs/*`) keep it. Kura never fetches
//! the database itself; without one the check warns and says how to get it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Check, Status, flag, pass};

/// The lock file of the workspace this binary was built from.
const LOCK: &str = include_str!("../../../../Cargo.lock");

const ID: &str = "dependencies.advisories";

#[derive(Debug, Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Debug, Deserialize)]
struct Package {
    name: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct Advisory {
    advisory: Meta,
    #[serde(default)]
    versions: Versions,
}

#[derive(Debug, Deserialize)]
struct Meta {
    id: String,
    #[serde(default)]
    informational: Option<String>,
    #[serde(default)]
    withdrawn: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct Versions {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

/// Cargo's home: `$CARGO_HOME`, else `~/.cargo`.
pub fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// The advisory databases under `cargo_home`.
fn databases(cargo_home: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let audit = cargo_home.join("advisory-db");
    if audit.join("crates").is_dir() {
        out.push(audit);
    }
    if let Ok(entries) = std::fs::read_dir(cargo_home.join("advisory-dbs")) {
        let mut deny: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("crates").is_dir())
            .collect();
        deny.sort();
        out.extend(deny);
    }
    out
}

/// The dependency-advisory check against the databases under
/// `cargo_home` (see [`cargo_home`]).
pub fn advisory_check(cargo_home: Option<&Path>) -> Check {
    let dbs = cargo_home.map(databases).unwrap_or_default();
    check(LOCK, &dbs)
}

/// The TOML front matter of an advisory file (```toml … ```).
fn front_matter(text: &str) -> Option<&str> {
    let start = text.find("```toml")? + "```toml".len();
    let len = text[start..].find("```")?;
    Some(&text[start..start + len])
}

fn matches_any(version: &semver::Version, reqs: &[String]) -> Result<bool, String> {
    for r in reqs {
        let req = semver::VersionReq::parse(r).map_err(|e| format!("`{r}`: {e}"))?;
        if req.matches(version) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn check(lock: &str, dbs: &[PathBuf]) -> Check {
    let Some(db) = dbs.first() else {
        return flag(
            ID,
            Status::Warn,
            "no RustSec advisory database is available offline, so dependencies were not checked",
            "on a machine with network access run `cargo audit fetch` (or `cargo deny fetch`), or copy a checkout of the RustSec advisory-db to ~/.cargo/advisory-db, then run `kura doctor` again",
        );
    };
    let lock: Lock = match toml::from_str(lock) {
        Ok(l) => l,
        Err(e) => {
            return flag(
                ID,
                Status::Warn,
                format!("the built-in dependency list does not parse: {e}"),
                "report this as a bug",
            );
        }
    };
    let mut vulnerable = Vec::new();
    let mut informational = Vec::new();
    let mut unreadable = Vec::new();
    let mut advisories = 0;
    for package in &lock.package {
        let Ok(version) = semver::Version::parse(&package.version) else {
            continue;
        };
        let Ok(entries) = std::fs::read_dir(db.join("crates").join(&package.name)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    front_matter(&t)
                        .ok_or_else(|| "no TOML front matter".to_owned())
                        .and_then(|f| toml::from_str::<Advisory>(f).map_err(|e| e.to_string()))
                });
            let advisory = match parsed {
                Ok(a) => a,
                Err(e) => {
                    unreadable.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            advisories += 1;
            if advisory.advisory.withdrawn.is_some() {
                continue;
            }
            let safe = matches_any(&version, &advisory.versions.patched)
                .and_then(|p| Ok(p || matches_any(&version, &advisory.versions.unaffected)?));
            match safe {
                Ok(true) => {}
                Ok(false) => {
                    let line = format!(
                        "{} {} ({})",
                        package.name, package.version, advisory.advisory.id
                    );
                    match advisory.advisory.informational {
                        Some(kind) => informational.push(format!("{line}: {kind}")),
                        None => vulnerable.push(line),
                    }
                }
                Err(e) => unreadable.push(format!("{}: {e}", path.display())),
            }
        }
    }
    let source = db.display();
    if !vulnerable.is_empty() {
        return flag(
            ID,
            Status::Fail,
            format!(
                "{} dependency version(s) have published vulnerabilities ({source}): {}",
                vulnerable.len(),
                vulnerable.join("; ")
            ),
            "upgrade Kura to a release built with patched versions; until then check each advisory's workaround",
        );
    }
    if !informational.is_empty() || !unreadable.is_empty() {
        let mut summary = Vec::new();
        if !informational.is_empty() {
            summary.push(format!(
                "informational advisories: {}",
                informational.join("; ")
            ));
        }
        if !unreadable.is_empty() {
            summary.push(format!("unreadable advisories: {}", unreadable.join("; ")));
        }
        return flag(
            ID,
            Status::Warn,
            format!(
                "no known vulnerability ({source}), but {}",
                summary.join("; ")
            ),
            "review them; unmaintained crates are replaced in a later Kura release",
        );
    }
    pass(
        ID,
        format!(
            "{} dependencies checked against {advisories} matching advisories in {source}: no known vulnerability",
            lock.package.len()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "alpha"
version = "1.2.3"

[[package]]
name = "beta"
version = "0.4.0"
"#;

    fn advisory(db: &Path, name: &str, id: &str, body: &str) {
        let dir = db.join("crates").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("{id}.md")),
            format!("```toml\n[advisory]\nid = \"{id}\"\npackage = \"{name}\"\n{body}```\n\n# Title\n\nText.\n"),
        )
        .unwrap();
    }

    #[test]
    fn warns_without_a_database_and_judges_versions_with_one() {
        let home = tempfile::tempdir().unwrap();
        let c = check(LOCK, &databases(home.path()));
        assert_eq!(c.status, Status::Warn);
        assert!(c.remediation.unwrap().contains("cargo audit fetch"));

        // cargo-deny's layout; a patched and an unaffected range.
        let db = home.path().join("advisory-dbs").join("github.com-abc");
        advisory(
            &db,
            "alpha",
            "RUSTSEC-2099-0001",
            "[versions]\npatched = [\">= 1.2.0\"]\n",
        );
        advisory(
            &db,
            "beta",
            "RUSTSEC-2099-0002",
            "[versions]\npatched = [\">= 0.5.0\"]\nunaffected = [\"< 0.3.0\"]\n",
        );
        let dbs = databases(home.path());
        assert_eq!(dbs, vec![db.clone()]);
        let c = check(LOCK, &dbs);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.summary.contains("beta 0.4.0 (RUSTSEC-2099-0002)"),
            "{c:?}"
        );
        assert!(!c.summary.contains("alpha"), "{c:?}");

        // Withdrawn advisories do not count; informational ones warn.
        std::fs::remove_dir_all(db.join("crates").join("beta")).unwrap();
        advisory(
            &db,
            "beta",
            "RUSTSEC-2099-0003",
            "withdrawn = \"2099-02-01\"\n[versions]\npatched = []\n",
        );
        advisory(
            &db,
            "alpha",
            "RUSTSEC-2099-0004",
            "informational = \"unmaintained\"\n[versions]\npatched = []\n",
        );
        let c = check(LOCK, &dbs);
        assert_eq!(c.status, Status::Warn, "{c:?}");
        assert!(
            c.summary
                .contains("alpha 1.2.3 (RUSTSEC-2099-0004): unmaintained"),
            "{c:?}"
        );
        std::fs::remove_dir_all(db.join("crates").join("alpha")).unwrap();
        let c = check(LOCK, &dbs);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.summary.contains("2 dependencies"), "{c:?}");
    }

    #[test]
    fn the_built_in_lock_lists_kuras_dependencies() {
        let lock: Lock = toml::from_str(super::LOCK).unwrap();
        assert!(lock.package.iter().any(|p| p.name == "rustls"));
    }
}
