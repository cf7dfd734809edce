//! The facade is the documented surface: users depend on `tasklet` alone, so
//! every doc example and doc text names `tasklet::` and `tasklet::netio::`,
//! never the sub-crates `tasklet_runtime`/`tasklet_netio` (copying such an
//! example fails with `E0432 unresolved import`), `tasklet::netio` renders as
//! a module of its own in rustdoc, and rustc names its types
//! `tasklet::netio::TcpStream` in diagnostics.
//!
//! The doc examples themselves compile through the facade as doc tests
//! (`cargo test --doc -p tasklet-netio`, `-p tasklet-runtime`, `-p tasklet`):
//! `tasklet` is a dev-dependency of both sub-crates for that purpose.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files under `dir` (recursively) whose name ends with `ext`.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.to_string_lossy().ends_with(ext) {
            out.push(path);
        }
    }
}

/// The text of a doc line as a reader sees it: intra-doc link targets
/// (`[text](tasklet_runtime::x)`, `[text]: tasklet_runtime::x`) are resolved
/// by rustdoc and never shown, so they may name the defining crate.
fn visible(line: &str) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') && trimmed.contains("]: ") {
        return String::new();
    }
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        out.push_str(&rest[..i + 1]);
        rest = &rest[i + 2..];
        match rest.find(')') {
            Some(j) => rest = &rest[j + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn no_doc_line_names_a_sub_crate_path() {
    let root = root();
    let mut rust = Vec::new();
    for dir in ["src", "runtime/src", "netio/src"] {
        files(&root.join(dir), ".rs", &mut rust);
    }
    let mut markdown = Vec::new();
    for dir in ["runtime/src", "netio/src", "docs"] {
        files(&root.join(dir), ".md", &mut markdown);
    }
    markdown.push(root.join("README.md"));

    let mut offenders = Vec::new();
    let mut check = |path: &Path, n: usize, text: &str| {
        let shown = visible(text);
        if shown.contains("tasklet_netio::") || shown.contains("tasklet_runtime::") {
            offenders.push(format!("{}:{}: {}", path.display(), n + 1, text.trim()));
        }
    };
    for path in &rust {
        let src = std::fs::read_to_string(path).unwrap();
        for (n, line) in src.lines().enumerate() {
            let t = line.trim_start();
            if let Some(doc) = t.strip_prefix("///").or_else(|| t.strip_prefix("//!")) {
                check(path, n, doc);
            } else if t.starts_with("#[doc") || t.starts_with("#![doc") {
                check(path, n, t);
            }
        }
    }
    for path in &markdown {
        let src = std::fs::read_to_string(path).unwrap();
        for (n, line) in src.lines().enumerate() {
            check(path, n, line);
        }
    }
    assert!(
        offenders.is_empty(),
        "doc text must name the facade (`tasklet::`, `tasklet::netio::`), not the sub-crates:\n{}",
        offenders.join("\n")
    );
    // The scan did look at the sources it is meant to guard.
    assert!(rust.iter().any(|p| p.ends_with("netio/src/tcp.rs")));
    assert!(markdown
        .iter()
        .any(|p| p.ends_with("netio/src/overview.md")));
}

#[test]
fn visible_text_ignores_link_targets_only() {
    assert_eq!(
        visible(" [`tasklet::timeout`](tasklet_runtime::timeout) or"),
        " [`tasklet::timeout`] or"
    );
    assert!(visible(" use tasklet_netio::TcpStream;").contains("tasklet_netio::"));
    assert_eq!(visible("[reset]: tasklet_runtime::signal::reset"), "");
}

/// Runs `cargo` on a scratch crate that depends on the facade only (as a
/// user's would), and on `cargo doc` of the facade; one test so the two share
/// a target directory under `target/tmp`.
#[test]
fn facade_paths_in_rustdoc_and_rustc_diagnostics() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("facade_docs");
    let probe = tmp.join("probe");
    std::fs::create_dir_all(probe.join("src")).unwrap();
    std::fs::write(
        probe.join("Cargo.toml"),
        format!(
            "[package]\nname = \"facade-probe\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\ntasklet = {{ path = {:?} }}\n[workspace]\n",
            root()
        ),
    )
    .unwrap();
    // The workspace's lock file: no registry access for versions it already pins.
    std::fs::copy(root().join("Cargo.lock"), probe.join("Cargo.lock")).unwrap();
    std::fs::write(
        probe.join("src/main.rs"),
        "fn takes(_: std::net::TcpStream) {}\n\
         fn main() {\n\
             let s = tasklet::netio::TcpStream::connect(\"127.0.0.1:1\").unwrap();\n\
             takes(s);\n\
         }\n",
    )
    .unwrap();
    let target = tmp.join("target");
    let out = Command::new(&cargo)
        .args(["check", "--offline", "--quiet", "--message-format=short"])
        .current_dir(&probe)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the probe must not compile");
    assert!(
        stderr.contains("E0308") && stderr.contains("found `tasklet::netio::TcpStream`"),
        "rustc should name the facade path:\n{stderr}"
    );
    assert!(!stderr.contains("tasklet_netio::"), "{stderr}");

    let out = Command::new(&cargo)
        .args(["doc", "--offline", "--quiet", "--no-deps", "-p", "tasklet"])
        .current_dir(root())
        .env("CARGO_TARGET_DIR", &target)
        // A broken link in the overview shared with netio fails here.
        .env("RUSTDOCFLAGS", "-D warnings")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo doc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = target.join("doc");
    // `tasklet::netio`'s pages exist and are in the search index.
    for page in [
        "tasklet/netio/index.html",
        "tasklet/netio/struct.TcpStream.html",
        "tasklet/netio/struct.StreamServer.html",
        "tasklet/netio/process/index.html",
    ] {
        assert!(doc.join(page).exists(), "rustdoc did not render {page}");
    }
    let index = std::fs::read_to_string(doc.join("tasklet/netio/index.html")).unwrap();
    assert!(
        index.contains("The gevent echo server"),
        "netio's overview is missing"
    );
    // Links in netio's docs lead to the facade's pages, not the sub-crates'.
    assert!(
        index.contains("href=\"../fn.timeout.html\""),
        "timeout link"
    );
    // The index's layout varies across rustdoc versions: read all of it.
    let mut parts = Vec::new();
    if doc.join("search.index").is_dir() {
        files(&doc.join("search.index"), ".js", &mut parts);
    }
    files(&doc, "search-index.js", &mut parts);
    let search: String = parts
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        search.contains("tasklet::netio"),
        "netio is not in the search index"
    );
}
