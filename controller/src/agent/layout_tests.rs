use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;

fn bundle(pairs: &[(&str, &str)]) -> Bundle {
    Bundle::new(
        pairs
            .iter()
            .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
            .collect(),
    )
}

fn layout() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let l = Layout::new(dir.path().join("state")).unwrap();
    l.prepare().unwrap();
    (dir, l)
}

#[test]
fn versions_are_written_whole_then_published() {
    let (_d, l) = layout();
    let b = bundle(&[("nginx.conf", "events {}\n"), ("conf.d/a/b.conf", "x;\n")]);
    let mut edited = b.files().clone();
    edited.insert("nginx.conf".into(), b"# edited\nevents {}\n".to_vec());
    let seen = RefCell::new(Vec::new());
    let hook = |stage: &str| {
        // At every hook point the final name does not exist yet: a crash leaves only a stage.
        assert!(!l.version(&b.digest()).exists());
        seen.borrow_mut().push(stage.to_string());
    };
    let dir = l.write_version(&b, &edited, &hook).unwrap();
    assert_eq!(seen.into_inner(), ["mid_write", "written"]);
    assert_eq!(
        fs::read(dir.join("nginx.conf")).unwrap(),
        b"# edited\nevents {}\n"
    );
    assert_eq!(fs::read(dir.join("conf.d/a/b.conf")).unwrap(), b"x;\n");
    let leftovers: Vec<_> = fs::read_dir(l.versions())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from(b.digest().to_hex())]);
    // Writing the same version again replaces it.
    l.write_version(&b, b.files(), &|_| {}).unwrap();
    assert_eq!(fs::read(dir.join("nginx.conf")).unwrap(), b"events {}\n");
}

#[test]
fn current_swaps_and_applied_round_trips() {
    let (_d, l) = layout();
    assert_eq!(l.read_current(), None);
    assert_eq!(l.read_applied(), None);
    let a = bundle(&[("nginx.conf", "a")]);
    let b = bundle(&[("nginx.conf", "b")]);
    for x in [&a, &b] {
        l.write_version(x, x.files(), &|_| {}).unwrap();
    }
    l.swap_current(&a.digest()).unwrap();
    assert_eq!(l.read_current(), Some(a.digest()));
    l.swap_current(&b.digest()).unwrap();
    assert_eq!(l.read_current(), Some(b.digest()));
    assert_eq!(fs::read(l.current().join("nginx.conf")).unwrap(), b"b");
    let rec = AppliedRecord {
        digest: b.digest(),
        commit: "abc".into(),
        entry: "nginx.conf".into(),
        applied_at: Timestamp::UNIX_EPOCH,
        tree: Default::default(),
    };
    l.write_applied(&rec).unwrap();
    assert_eq!(l.read_applied(), Some(rec));
    l.remove_version(&b.digest()).unwrap();
    assert_eq!(
        l.read_applied(),
        None,
        "a record without its directory is no record"
    );
    assert_eq!(l.read_current(), None);
}

#[test]
fn prune_keeps_the_newest_and_the_protected() {
    let (_d, l) = layout();
    let bundles: Vec<Bundle> = (0..5)
        .map(|i| bundle(&[("nginx.conf", &format!("v{i}"))]))
        .collect();
    for b in &bundles {
        l.write_version(b, b.files(), &|_| {}).unwrap();
        // Distinct modification times, whatever the filesystem's granularity.
        let t = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(
                1_000 + bundles.iter().position(|x| x == b).unwrap() as u64,
            );
        File::open(l.version(&b.digest()))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let removed = l.prune(2, &[bundles[0].digest()]).unwrap();
    let mut want = vec![bundles[1].digest(), bundles[2].digest()];
    want.sort();
    let mut removed = removed;
    removed.sort();
    assert_eq!(removed, want);
    for i in [0, 3, 4] {
        assert!(l.version(&bundles[i].digest()).is_dir(), "{i} kept");
    }
}

#[test]
fn stale_stages_are_cleared_and_bad_paths_refused() {
    let (_d, l) = layout();
    fs::create_dir_all(l.versions().join(".stage-abc-1/x")).unwrap();
    l.prepare().unwrap();
    assert_eq!(fs::read_dir(l.versions()).unwrap().count(), 0);
    for bad in ["../x", "/etc/passwd", "a//b", "", "a/./b", "a\\b"] {
        let mut files = BTreeMap::new();
        files.insert(bad.to_string(), b"x".to_vec());
        let b = Bundle::new(files);
        let r = l.write_version(&b, b.files(), &|_| {});
        assert!(matches!(r, Err(WriteError::BadPath(_))), "{bad:?}: {r:?}");
    }
    assert_eq!(
        fs::read_dir(l.versions()).unwrap().count(),
        0,
        "no stage made"
    );
}

#[test]
fn a_path_that_is_a_file_and_a_directory_is_refused_before_writing() {
    let (_d, l) = layout();
    let b = bundle(&[("nginx.conf", "x"), ("conf", "y"), ("conf/site.conf", "z")]);
    let r = l.write_version(&b, b.files(), &|_| {});
    assert!(
        matches!(&r, Err(WriteError::FileAndDirectory { file, .. }) if file == "conf"),
        "{r:?}"
    );
    assert_eq!(
        fs::read_dir(l.versions()).unwrap().count(),
        0,
        "no stage made"
    );
    assert!(check_paths(["a/b", "a/c", "ab/c", "a.conf"].into_iter()).is_ok());
}

#[test]
fn state_paths_nginx_cannot_quote_are_refused() {
    assert!(Layout::new("relative".into()).is_err());
    assert!(Layout::new("/tmp/a b".into()).is_err());
    assert!(Layout::new("/tmp/a,b".into()).is_err());
    assert!(Layout::new(format!("/{}", "x".repeat(120)).into()).is_err());
    assert!(Layout::new("/tmp/sb-1.state_x".into()).is_ok());
}

#[test]
fn kept_bundles_go_with_their_version_and_a_rewrite_replaces_a_drifted_copy() {
    let (_d, l) = layout();
    let b = bundle(&[("nginx.conf", "events {}\n")]);
    let dir = l.write_version(&b, b.files(), &|_| {}).unwrap();
    assert_eq!(l.read_bundle(&b.digest()), None);
    l.write_bundle(&b.digest(), b"{\"kept\":1}").unwrap();
    assert_eq!(
        l.read_bundle(&b.digest()).as_deref(),
        Some(&b"{\"kept\":1}"[..])
    );
    // Drift by hand: an edited file and an extra one.
    fs::write(dir.join("nginx.conf"), "events { }\n").unwrap();
    fs::write(dir.join("extra.conf"), "x;\n").unwrap();
    l.swap_current(&b.digest()).unwrap();
    let again = l.write_version(&b, b.files(), &|_| {}).unwrap();
    assert_eq!(again, dir);
    assert_eq!(fs::read(dir.join("nginx.conf")).unwrap(), b"events {}\n");
    assert!(!dir.join("extra.conf").exists());
    assert_eq!(l.read_current(), Some(b.digest()));
    let names: Vec<_> = fs::read_dir(l.versions())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        [std::ffi::OsString::from(b.digest().to_hex())],
        "no stage left"
    );
    l.remove_version(&b.digest()).unwrap();
    assert_eq!(
        l.read_bundle(&b.digest()),
        None,
        "the bundle goes with its version"
    );
}

/// A write that fails half-way (ENOSPC on a full disk; here the second file is taken before the
/// writer gets to it) leaves no stage behind: a partial copy would keep holding the space the
/// next apply needs until the agent restarts (issue 16, the agent's disk full mid-apply).
#[test]
fn a_version_write_that_fails_half_way_leaves_no_stage() {
    let (_d, l) = layout();
    let b = bundle(&[("a.conf", "x;\n"), ("nginx.conf", "events {}\n")]);
    let hook = |at: &str| {
        if at == "mid_write" {
            let stage = fs::read_dir(l.versions())
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(".stage-"))
                .expect("the stage being written");
            fs::write(stage.path().join("nginx.conf"), "taken").unwrap();
        }
    };
    let r = l.write_version(&b, b.files(), &hook);
    assert!(matches!(r, Err(WriteError::Fs(_))), "{r:?}");
    assert_eq!(
        fs::read_dir(l.versions()).unwrap().count(),
        0,
        "no stage left"
    );
}

/// Likewise a kept bundle whose write fails leaves no `.new` file.
#[test]
fn a_bundle_write_that_fails_leaves_no_temp_file() {
    let (_d, l) = layout();
    let d = bundle(&[("nginx.conf", "events {}\n")]).digest();
    let r = l.write_bundle_with(&d, &mut |w| {
        w.write_all(b"{\"half\":")?;
        Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC))
    });
    assert!(
        r.as_ref()
            .is_err_and(|e| e.source.raw_os_error() == Some(nix::libc::ENOSPC)),
        "{r:?}"
    );
    assert_eq!(
        fs::read_dir(l.bundles()).unwrap().count(),
        0,
        "no temp file left"
    );
    assert_eq!(l.read_bundle(&d), None);
}
