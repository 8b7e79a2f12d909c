//! The annotated example configuration in `deploy/` parses.

#[test]
fn the_example_configuration_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/trucd.example.toml"
    ))
    .expect("deploy/trucd.example.toml");
    let config = trucd::Config::from_toml(&text).expect("valid");
    assert_eq!(config.ministry.as_str(), "000.00.00.G04");
    assert_eq!(config.limits.lease_secs, 60);
    assert!(config.tls.is_some());
}

/// `trucd check-config` on the example with the paths pointed at real files: every check
/// passes; with a missing certificate and a port in use, each problem is named and the
/// exit code is 1. Secrets never appear.
#[test]
fn check_config_names_every_problem_and_masks_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = trucd::pki::LocalCa::new("check CA").expect("ca");
    let server = ca.issue("relay", &["localhost"]).expect("cert");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).expect("write");
    std::fs::write(dir.path().join("relay.pem"), &server.cert).expect("write");
    std::fs::write(dir.path().join("relay.key"), &server.key).expect("write");
    let config = format!(
        "ministry = \"000.00.00.G04\"\nlisten = \"127.0.0.1:0\"\nstore_dir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n[upstream]\nbase_url = \"https://axis.example/vdxp\"\nsystem_id = \"bogtvt\"\nsecret = \"very-secret-value\"\n",
        dir.path().join("store"),
        dir.path().join("relay.pem"),
        dir.path().join("relay.key"),
        dir.path().join("ca.pem"),
    );
    let path = dir.path().join("trucd.toml");
    std::fs::write(&path, &config).expect("write");
    let run = |extra_env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_trucd"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TRUC_") {
                c.env_remove(name);
            }
        }
        c.args(["check-config", "--config"]).arg(&path);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c.output().expect("trucd runs")
    };

    let out = run(&[("TRUC_LIMITS__LEASE_SECS", "90")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("configuration ok"), "{stdout}");
    assert!(
        stdout.contains("lease_secs = 90"),
        "the environment layer: {stdout}"
    );
    assert!(stdout.contains("TRUC_LIMITS__LEASE_SECS"), "{stdout}");
    assert!(!stdout.contains("very-secret-value"), "{stdout}");

    // A missing key file and a port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    std::fs::remove_file(dir.path().join("relay.key")).expect("rm");
    let out = run(&[("TRUC_LISTEN", &port)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL tls"), "{stdout}");
    assert!(
        stdout.contains(&format!("FAIL listen: cannot listen on {port}")),
        "{stdout}"
    );
    assert!(stdout.contains("2 problem(s) found"), "{stdout}");

    // A misspelt variable stops it before anything else.
    let out = run(&[("TRUC_LIMITS__LEASE_SEC", "9")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lease_sec"));
}
