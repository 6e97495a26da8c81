//! The hardened baseline from the outside: `kura doctor`, the production
//! start that refuses insecure installations, and the systemd unit.

use super::*;

fn doctor_json(dir: &Path, extra_env: &[(&str, &str)]) -> (bool, serde_json::Value) {
    let mut cmd = kura(dir);
    cmd.args(["doctor", "--json"]);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}{}",
            stdout(&out),
            stderr(&out)
        )
    });
    (out.status.success(), doc)
}

fn check<'a>(doc: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {doc}"))
}

#[test]
fn doctor_passes_a_fresh_installation_and_fails_loose_key_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let (status, _) = Serving::start(kura(&dir)).terminate();
    assert!(status.success());

    let (ok, doc) = doctor_json(&dir, &[]);
    assert!(ok, "{doc}");
    assert_eq!(doc["summary"]["fail"], 0, "{doc}");
    for id in [
        "files.master_key",
        "files.platform_db",
        "keys.sealing",
        "tls.certificate",
        "edge.firewall",
        "identity.operator_mfa",
        "events.export",
    ] {
        let c = check(&doc, id);
        assert!(
            ["pass", "warn"].contains(&c["status"].as_str().unwrap()),
            "{c}"
        );
        if c["status"] == "warn" {
            assert!(
                c["remediation"].is_string(),
                "a warning says what to do: {c}"
            );
        }
    }
    assert_eq!(check(&doc, "files.master_key")["status"], "pass");
    assert_eq!(check(&doc, "files.data_tree")["status"], "pass");
    assert_eq!(
        check(&doc, "keys.sealing")["status"],
        "warn",
        "unsealed by default"
    );

    // Dependency advisories: a warning with the way to get a database
    // when none is available offline, a failure when one lists a version
    // Kura is built with.
    let cargo_home = tmp.path().join("cargo");
    std::fs::create_dir(&cargo_home).unwrap();
    let home = cargo_home.to_str().unwrap();
    let (ok, doc) = doctor_json(&dir, &[("CARGO_HOME", home)]);
    assert!(ok, "{doc}");
    let c = check(&doc, "dependencies.advisories");
    assert_eq!(c["status"], "warn", "{c}");
    assert!(
        c["remediation"].as_str().unwrap().contains("advisory"),
        "{c}"
    );
    let crate_dir = cargo_home.join("advisory-db/crates/rustls");
    std::fs::create_dir_all(&crate_dir).unwrap();
    std::fs::write(
        crate_dir.join("RUSTSEC-2099-0042.md"),
        "```toml\n[advisory]\nid = \"RUSTSEC-2099-0042\"\npackage = \"rustls\"\n[versions]\npatched = [\">= 99.0.0\"]\n```\n\n# A test advisory\n",
    )
    .unwrap();
    let (ok, doc) = doctor_json(&dir, &[("CARGO_HOME", home)]);
    assert!(!ok, "a known vulnerability fails the doctor: {doc}");
    let c = check(&doc, "dependencies.advisories");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["summary"].as_str().unwrap().contains("RUSTSEC-2099-0042"),
        "{c}"
    );

    // A world-readable key file fails, with the fix, and a non-zero exit.
    let key = dir.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, doc) = doctor_json(&dir, &[]);
    assert!(!ok, "doctor exits non-zero on a failure");
    let c = check(&doc, "files.master_key");
    assert_eq!(c["status"], "fail", "{c}");
    assert!(
        c["remediation"].as_str().unwrap().contains("chmod 600"),
        "{c}"
    );
    let text = run(kura(&dir).arg("doctor"));
    assert!(!text.status.success());
    assert!(
        stdout(&text).contains("FAIL  files.master_key"),
        "{}",
        stdout(&text)
    );

    // Production refuses to start on it rather than repairing it, and says why.
    let out =
        run(kura(&dir)
            .env("KURA_ENV", "production")
            .args(["serve", "--bind", "127.0.0.1:0"]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refusing to start with env = production") && err.contains("master.key"),
        "{err}"
    );
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the refused start changed nothing");

    // Debug logging and an edge turned off are refused by the configuration.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(kura(&dir)
        .env("KURA_ENV", "production")
        .env("KURA_LOG__LEVEL", "debug")
        .args(["config", "check"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`log.level`"), "{}", stderr(&out));

    // Listening on every interface needs an allow list or trusted proxies.
    let out = run(kura(&dir)
        .env("KURA_ENV", "production")
        .args(["serve", "--bind", "0.0.0.0:0"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("edge.firewall"), "{}", stderr(&out));
}

/// `systemd-analyze` is part of systemd; where it is missing the unit is
/// still checked for its sandboxing, and CI (which installs it) fails.
fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() && std::env::var_os("CI").is_some() {
        panic!("systemd-analyze is not installed; `cargo xtask test` installs the systemd package");
    }
    found
}

#[test]
fn the_systemd_unit_is_sandboxed_and_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kura.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| settings.iter().any(|(key, value)| *key == k && *value == v);
    for (k, v) in [
        ("User", "kura"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("ReadWritePaths", "/var/lib/kura"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("Environment", "KURA_ENV=production"),
        ("Environment", "KURA_DATA_DIR=/var/lib/kura"),
    ] {
        assert!(has(k, v), "the unit lacks {k}={v}");
    }
    let writable: Vec<&str> = settings
        .iter()
        .filter(|(k, _)| *k == "ReadWritePaths")
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(
        writable,
        ["/var/lib/kura"],
        "the data directory is the only writable path"
    );

    let Some(analyze) = systemd_analyze() else {
        eprintln!("systemd-analyze not installed: verified the unit's settings only");
        return;
    };
    // Verify the unit as written, with the freshly built binary in place of
    // the installed path (verify checks that ExecStart exists).
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("kura.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/kura", KURA)).unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A unit with a typo in a directive does not verify: the check is real.
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/kura", KURA)
            .replace("ProtectSystem=strict", "ProtectSystem=stritc"),
    )
    .unwrap();
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!out.stderr.is_empty(), "a bad value is reported");
}
