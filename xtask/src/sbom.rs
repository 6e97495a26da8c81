//! `cargo xtask sbom`: a CycloneDX 1.5 software bill of materials for the
//! `kura` binary, built from `cargo metadata` and the lock file's checksums.
//!
//! Only what ships is listed: the packages reachable from `kura-cli` through
//! normal and build dependencies on the host platform (dev-dependencies of
//! tests and benchmarks are left out). Each component carries its purl,
//! licence expression and the SHA-256 of its crates.io archive. The document
//! has no timestamp or random serial number, so the same lock file always
//! gives the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

/// The package the SBOM describes.
pub const ROOT: &str = "kura-cli";

fn cargo_metadata(root: &Path) -> anyhow::Result<Value> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    let host = String::from_utf8_lossy(&host.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")?;
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
        ])
        .arg(&host)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("cargo metadata printed invalid JSON")
}

/// Checksums from `Cargo.lock`, by (name, version).
fn checksums(root: &Path) -> anyhow::Result<BTreeMap<(String, String), String>> {
    let text = std::fs::read_to_string(root.join("Cargo.lock")).context("reading Cargo.lock")?;
    let lock: toml::Table = text.parse().context("parsing Cargo.lock")?;
    let mut out = BTreeMap::new();
    for p in lock
        .get("package")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        if let (Some(n), Some(v), Some(c)) = (field("name"), field("version"), field("checksum")) {
            out.insert((n, v), c);
        }
    }
    Ok(out)
}

fn purl(name: &str, version: &str) -> String {
    format!("pkg:cargo/{name}@{version}")
}

/// Builds the SBOM document for the workspace at `root`.
pub fn generate(root: &Path) -> anyhow::Result<Value> {
    let meta = cargo_metadata(root)?;
    let sums = checksums(root)?;
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .context("metadata without packages")?
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p)))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .context("metadata without a resolve graph")?
        .iter()
        .filter_map(|n| Some((n["id"].as_str()?, n)))
        .collect();
    let root_id = packages
        .iter()
        .find(|(_, p)| p["name"] == ROOT)
        .map(|(id, _)| *id)
        .context("the workspace has no kura-cli package")?;

    // Walk normal and build edges from the binary's package.
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut todo = vec![root_id];
    let mut seen = BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = nodes.get(id) else { continue };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let shipped = dep["dep_kinds"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            if let (true, Some(to)) = (shipped, dep["pkg"].as_str()) {
                edges.entry(id).or_default().insert(to);
                todo.push(to);
            }
        }
    }

    let component = |id: &str| -> Option<Value> {
        let p = packages.get(id)?;
        let name = p["name"].as_str()?;
        let version = p["version"].as_str()?;
        let mut c = json!({
            "type": if id == root_id { "application" } else { "library" },
            "bom-ref": purl(name, version),
            "name": name,
            "version": version,
            "purl": purl(name, version),
        });
        if let Some(l) = p["license"].as_str() {
            c["licenses"] = json!([{ "expression": l }]);
        }
        if let Some(sum) = sums.get(&(name.to_owned(), version.to_owned())) {
            c["hashes"] = json!([{ "alg": "SHA-256", "content": sum }]);
        }
        if let Some(repo) = p["repository"].as_str() {
            c["externalReferences"] = json!([{ "type": "vcs", "url": repo }]);
        }
        Some(c)
    };
    let reference = |id: &str| -> Option<String> {
        let p = packages.get(id)?;
        Some(purl(p["name"].as_str()?, p["version"].as_str()?))
    };
    let components: Vec<Value> = seen
        .iter()
        .filter(|id| **id != root_id)
        .filter_map(|id| component(id))
        .collect();
    let dependencies: Vec<Value> = seen
        .iter()
        .filter_map(|id| {
            let depends: Vec<String> = edges
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|d| reference(d))
                .collect();
            Some(json!({ "ref": reference(id)?, "dependsOn": depends }))
        })
        .collect();
    Ok(json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "tools": { "components": [{ "type": "application", "name": "cargo xtask sbom" }] },
            "component": component(root_id).context("the kura-cli package has no name or version")?,
        },
        "components": components,
        "dependencies": dependencies,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sbom_lists_what_ships_with_purls_licences_and_hashes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let bom = generate(root).unwrap();
        assert_eq!(bom["bomFormat"], "CycloneDX");
        assert_eq!(bom["specVersion"], "1.5");
        assert_eq!(bom["metadata"]["component"]["name"], ROOT);
        let components = bom["components"].as_array().unwrap();
        let names: BTreeSet<&str> = components
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for shipped in ["kura-server", "rustls", "aws-lc-rs", "governor", "rusqlite"] {
            assert!(names.contains(shipped), "{shipped} missing");
        }
        // Benchmarks' and tests' tools do not ship.
        for dev_only in ["criterion", "kura-testkit"] {
            assert!(!names.contains(dev_only), "{dev_only} is not in the binary");
        }
        for c in components {
            assert!(c["purl"].as_str().unwrap().starts_with("pkg:cargo/"), "{c}");
            if !c["name"].as_str().unwrap().starts_with("kura-") {
                assert_eq!(c["hashes"][0]["alg"], "SHA-256", "{c}");
                assert!(c["licenses"][0]["expression"].is_string(), "{c}");
            }
        }
        assert_eq!(
            bom,
            generate(root).unwrap(),
            "the same lock file gives the same SBOM"
        );
    }
}
