use super::*;

#[test]
fn probe_specs_parse_with_defaults_and_bounds() {
    let p: ProbeSpec = "host=example.test,path=/healthz,status=204,rate=5"
        .parse()
        .unwrap();
    assert_eq!(
        p,
        ProbeSpec {
            host: "example.test".into(),
            path: "/healthz".into(),
            status: 204,
            rate: 5.0
        }
    );
    let d: ProbeSpec = "path=/x".parse().unwrap();
    assert_eq!((d.host.as_str(), d.status, d.rate), ("localhost", 200, 1.0));
    for bad in [
        "rate=0",
        "rate=1000",
        "status=99",
        "path=x",
        "colour=red",
        "host",
        "rate=nan",
    ] {
        assert!(bad.parse::<ProbeSpec>().is_err(), "{bad}");
    }
}

#[test]
fn probes_only_target_loopback() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }
    let parse = |extra: &[&str]| {
        let mut argv = vec!["x", "--state-dir", "/tmp/s"];
        argv.extend_from_slice(extra);
        AgentConfig::from_args(Cli::try_parse_from(argv).unwrap().agent)
    };
    assert!(parse(&["--nginx-listen", "10.0.0.1:80", "--probe", "path=/"]).is_err());
    assert!(
        parse(&["--probe", "path=/"]).is_err(),
        "probe without target"
    );
    let ok = parse(&[
        "--nginx-listen",
        "127.0.0.2:8080",
        "--probe",
        "path=/",
        "--probe",
        "path=/b",
    ])
    .unwrap();
    assert_eq!(ok.probes.len(), 2);
    assert!(ok.manage_nginx);
    assert!(ok.kubernetes.is_none());
}

#[test]
fn the_api_listens_on_loopback_unless_told_and_then_needs_a_token() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }
    let parse = |extra: &[&str]| {
        let mut argv = vec!["x", "--state-dir", "/tmp/s"];
        argv.extend_from_slice(extra);
        AgentConfig::from_args(Cli::try_parse_from(argv).unwrap().agent)
    };
    let defaults = parse(&[]).unwrap();
    assert_eq!(
        defaults.limits.serve.header_read_timeout,
        crate::http_server::DEFAULT_HEADER_READ_TIMEOUT
    );
    assert_eq!(defaults.limits.serve.max_connections, 64);
    assert_eq!(defaults.worker_user, "nobody");
    assert!(parse(&["--listen", "[::1]:9180"]).is_ok());
    let err = parse(&["--listen", "0.0.0.0:9180"]).unwrap_err();
    assert!(err.contains("--allow-remote-api"), "{err}");
    assert!(parse(&["--listen", "10.1.2.3:9180"]).is_err());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n\n").unwrap();
    let token = token.display().to_string();
    if std::env::var_os(crate::agent::token::TOKEN_ENV).is_none() {
        let err = parse(&["--listen", "0.0.0.0:9180", "--allow-remote-api"]).unwrap_err();
        assert!(err.contains("token"), "{err}");
        assert!(defaults.token.is_none(), "generated at start");
    }
    let remote = parse(&[
        "--listen",
        "0.0.0.0:9180",
        "--allow-remote-api",
        "--token-file",
        &token,
    ])
    .unwrap();
    assert_eq!(
        remote.token.map(|t| t.expose().to_string()).as_deref(),
        Some("t0k3n")
    );
    for bad in [
        &["--header-read-timeout", "0"][..],
        &["--header-read-timeout", "nan"],
        &["--max-connections", "0"],
        &["--worker-user", "a b"],
    ] {
        assert!(parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn kubernetes_mode_needs_the_pod_and_a_token() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0k3n\n").unwrap();
    let token = token.display().to_string();
    let parse = |extra: &[&str]| {
        let mut argv = vec!["x", "--state-dir", "/tmp/s", "--kubernetes"];
        argv.extend_from_slice(extra);
        AgentConfig::from_args(Cli::try_parse_from(argv).unwrap().agent)
    };
    let ok = parse(&[
        "--pod-name",
        "p",
        "--pod-namespace",
        "n",
        "--token-file",
        &token,
    ])
    .unwrap();
    let kube = ok.kubernetes.unwrap();
    assert_eq!(
        (kube.pod_name.as_str(), kube.namespace.as_str()),
        ("p", "n")
    );
    assert_eq!(kube.token.expose(), "t0k3n");
    assert_eq!(kube.entry, "nginx.conf");
    let missing = dir.path().join("missing").display().to_string();
    let err = parse(&[
        "--pod-name",
        "p",
        "--pod-namespace",
        "n",
        "--token-file",
        &missing,
    ])
    .unwrap_err();
    assert!(err.contains("missing"), "{err}");
    // POD_NAME/POD_NAMESPACE are not set under `cargo test`.
    if std::env::var_os("POD_NAME").is_none() {
        let err = parse(&["--pod-namespace", "n", "--token-file", &token]).unwrap_err();
        assert!(err.contains("--pod-name"), "{err}");
    }
}
