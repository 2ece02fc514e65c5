//! `streamfleet schemas check`: every version pair of every schema must be compatible.

use std::path::{Path, PathBuf};

use streamfleet_runtime::codec::SchemaStore;

/// Checks the built-in schemas, or the `*.vN.avsc` files under `dir`; returns the exit code.
pub fn check(dir: Option<&Path>) -> anyhow::Result<i32> {
    let store = match dir {
        None => streamfleet_schemas::store(),
        Some(dir) => std::sync::Arc::new(load_dir(dir)?),
    };
    let checks = store.check_compatibility();
    let mut failed = 0;
    for name in store.names() {
        let versions: Vec<u32> = store.versions(name).iter().map(|k| k.version).collect();
        println!("{name}: versions {versions:?}");
    }
    for c in &checks {
        match &c.problem {
            None => println!(
                "  ok    {} v{} written, v{} reads",
                c.name, c.writer, c.reader
            ),
            Some(p) => {
                failed += 1;
                println!(
                    "  FAIL  {} v{} written, v{} reads: {p}",
                    c.name, c.writer, c.reader
                );
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} incompatible version pairs");
        return Ok(1);
    }
    println!("all {} version pairs compatible", checks.len());
    Ok(0)
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "avsc") {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads every `<Name>.v<N>.avsc` under `dir`.
pub fn load_dir(dir: &Path) -> anyhow::Result<SchemaStore> {
    let mut paths = Vec::new();
    files(dir, &mut paths).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    paths.sort();
    anyhow::ensure!(!paths.is_empty(), "{}: no .avsc files", dir.display());
    let mut store = SchemaStore::new();
    for path in paths {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let version = stem
            .rsplit_once(".v")
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .ok_or_else(|| {
                anyhow::anyhow!("{}: file name must end in .v<N>.avsc", path.display())
            })?;
        let json = std::fs::read_to_string(&path)?;
        store.register(&path.display().to_string(), version, &json)?;
    }
    Ok(store)
}
