//! Every example answers `--help` with its usage and exit status 0 (none of
//! them starts serving or running its demo instead), refuses an unknown
//! argument or a bad value with status 2 (naming the flag), and the `tasklets`
//! example's deliberate panic does not look like a crash with
//! `RUST_BACKTRACE=1`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{example, wait_bounded, KillOnDrop};

const LIMIT: Duration = Duration::from_secs(30);

/// Runs an example binary with `args` and `env`; returns its exit status,
/// stdout and stderr.
fn run(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(example(name));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    // Drain both pipes on threads so a chatty child cannot fill one and stall.
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let status = wait_bounded(&mut child.0, LIMIT);
    let code = status.code().unwrap_or(-1);
    (code, out.join().unwrap(), err.join().unwrap())
}

/// Whether this test build has `feature` of the `tasklet` crate (the examples
/// are built with the same features).
fn enabled(feature: &str) -> bool {
    let features = [
        ("codec", cfg!(feature = "codec")),
        ("tls", cfg!(feature = "tls")),
        ("tokio", cfg!(feature = "tokio")),
        ("futures-io", cfg!(feature = "futures-io")),
        ("hook", cfg!(feature = "hook")),
    ];
    features.iter().any(|&(name, on)| on && name == feature)
}

/// The names of the examples (`examples/*.rs`) that this build has: those
/// whose `required-features` in Cargo.toml are all enabled.
fn examples() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut skipped = Vec::new();
    let mut name = None;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            name = None;
        }
        if let Some(v) = line.strip_prefix("name = ") {
            name = Some(v.trim_matches('"').to_owned());
        }
        if let (Some(n), Some(v)) = (&name, line.strip_prefix("required-features = ")) {
            let needs = v.trim_matches(|c| c == '[' || c == ']');
            if !needs
                .split(',')
                .all(|f| enabled(f.trim().trim_matches('"')))
            {
                skipped.push(n.clone());
            }
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .filter(|n| !skipped.contains(n))
        .collect();
    names.sort();
    names
}

#[test]
fn every_example_prints_usage_on_help() {
    let names = examples();
    assert!(names.len() >= 10, "examples not found: {names:?}");
    for name in &names {
        for flag in ["--help", "-h"] {
            let (code, out, err) = run(name, &[flag], &[("RUST_LOG", "off")]);
            assert_eq!(
                code, 0,
                "{name} {flag}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
            );
            assert!(
                out.contains("USAGE:") && out.contains(&format!("    {name}")),
                "{name} {flag}: no usage line on stdout:\n{out}\nstderr:\n{err}"
            );
            assert!(
                out.contains("--help"),
                "{name} {flag}: the usage should list --help:\n{out}"
            );
        }
    }
}

#[test]
fn examples_without_options_refuse_unknown_arguments() {
    for name in [
        "blocking_offload",
        "producer_consumer",
        "subprocess",
        "tasklets",
    ] {
        let (code, _out, err) = run(name, &["--no-such-option"], &[("RUST_LOG", "off")]);
        assert_eq!(code, 2, "{name}: exit {code}, stderr:\n{err}");
        assert!(
            err.contains("unknown argument '--no-such-option'"),
            "{name}: {err}"
        );
        assert!(err.contains("USAGE:"), "{name}: {err}");
    }
}

#[test]
fn every_example_refuses_unknown_arguments_with_status_2() {
    for name in &examples() {
        for arg in ["--no-such-option", "stray"] {
            let (code, out, err) = run(name, &[arg], &[("RUST_LOG", "off")]);
            assert_eq!(
                code, 2,
                "{name} {arg}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
            );
            assert!(
                err.starts_with(&format!("{name}: unknown argument '{arg}'")),
                "{name} {arg}: {err}"
            );
            assert!(err.contains("USAGE:"), "{name} {arg}: {err}");
        }
    }
}

#[test]
fn a_missing_or_malformed_value_is_refused_naming_its_flag() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("echo_server", &["--addr"], "--addr needs a value"),
        (
            "echo_server",
            &["--workers", "0"],
            "--workers '0': expected a positive",
        ),
        (
            "echo_server",
            &["--idle-timeout=abc"],
            "--idle-timeout 'abc': expected a positive number of seconds",
        ),
        (
            "http_hello",
            &["--work-us", "-1"],
            "--work-us '-1': invalid digit",
        ),
        (
            "http_hello",
            &["--tls-cert", "c.pem"],
            "--tls-cert and --tls-key go together",
        ),
        (
            "echo_client",
            &["--conns=x"],
            "--conns 'x': expected a positive",
        ),
        (
            "echo_client",
            &["--addr=127.0.0.1:1", "--size"],
            "--size needs a value",
        ),
        ("port_forward", &["--to"], "--to needs a value"),
    ];
    for &(name, args, message) in cases {
        let (code, out, err) = run(name, args, &[("RUST_LOG", "off")]);
        assert_eq!(
            code, 2,
            "{name} {args:?}: exit {code}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            err.starts_with(&format!("{name}: {message}")) && err.contains("USAGE:"),
            "{name} {args:?}: {err}"
        );
    }
}

#[test]
fn tasklets_demo_panic_is_one_expected_line_even_with_backtraces_on() {
    let (code, out, err) = run("tasklets", &[], &[("RUST_BACKTRACE", "1")]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("(expected) the demo tasklet 'bad' panicked"),
        "stderr:\n{err}"
    );
    assert!(!err.contains("stack backtrace"), "stderr:\n{err}");
    assert!(out.contains("joined 'bad': "), "stdout:\n{out}");
    assert!(out.contains("dispatch returned 42"), "stdout:\n{out}");
}
