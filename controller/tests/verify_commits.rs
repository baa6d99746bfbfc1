//! Commit signature verification against commits signed by the real `git`, with keys made by the
//! real `gpg` (a throw-away GNUPGHOME, no passphrase) and `ssh-keygen`, all in temp dirs. A tool
//! that is missing makes its test say so and pass as skipped, rather than fail on a machine
//! without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use switchback::source::git::{Credentials, GitSource};
use switchback::source::verify::{KeyKind, TrustedKeys, VerifyError, verify_commit_at};

/// A temp dir holding a repository, a GNUPGHOME and ssh keys, with an environment for git that
/// reads no config of the machine or the user.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let lab = Lab { dir };
        std::fs::create_dir(lab.gnupg()).unwrap_or_else(|e| panic!("gnupg dir: {e}"));
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(lab.gnupg(), std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        lab.git(&["init", "-q", "-b", "main", "repo"], lab.path());
        lab
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    fn gnupg(&self) -> PathBuf {
        self.path().join("gnupg")
    }

    fn command(&self, program: &str, cwd: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(cwd)
            .env("HOME", self.path())
            .env("GNUPGHOME", self.gnupg())
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Ada Example")
            .env("GIT_AUTHOR_EMAIL", "ada@example.invalid")
            .env("GIT_COMMITTER_NAME", "Ada Example")
            .env("GIT_COMMITTER_EMAIL", "ada@example.invalid");
        command
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> String {
        let output = self
            .command(program, cwd)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn git(&self, args: &[&str], cwd: &Path) -> String {
        self.run("git", args, cwd)
    }

    /// Commits a change to `file` with extra `git -c`/commit arguments; returns the commit id.
    fn commit(&self, file: &str, message: &str, args: &[&str]) -> String {
        std::fs::write(self.repo().join(file), message).unwrap_or_else(|e| panic!("write: {e}"));
        self.git(&["add", file], &self.repo());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["commit", "-q", "-m", message]);
        self.git(&all, &self.repo());
        self.git(&["rev-parse", "HEAD"], &self.repo())
            .trim()
            .to_string()
    }

    /// Writes a copy of `commit` with its message changed but its signature kept: what an
    /// attacker who copies a signature onto other content makes. Returns the new commit's id.
    fn tamper(&self, commit: &str) -> String {
        let repo = git2::Repository::open(self.repo()).unwrap_or_else(|e| panic!("open: {e}"));
        let oid = git2::Oid::from_str(commit).unwrap_or_else(|e| panic!("oid: {e}"));
        let odb = repo.odb().unwrap_or_else(|e| panic!("odb: {e}"));
        let object = odb.read(oid).unwrap_or_else(|e| panic!("read: {e}"));
        let text = String::from_utf8_lossy(object.data()).into_owned();
        assert!(text.contains("gpgsig"), "the commit is signed");
        let altered = text.replacen("upstream api", "upstream evil", 1);
        assert_ne!(altered, text);
        odb.write(git2::ObjectType::Commit, altered.as_bytes())
            .unwrap_or_else(|e| panic!("write: {e}"))
            .to_string()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // The agent gpg started for this GNUPGHOME; without this it outlives the test.
        let _ = self
            .command("gpgconf", self.path())
            .args(["--kill", "gpg-agent"])
            .output();
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn keys(entries: &[(&str, &str)]) -> TrustedKeys {
    let data: BTreeMap<String, Vec<u8>> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    TrustedKeys::from_secret_data(&data).unwrap_or_else(|e| panic!("trusted keys: {e}"))
}

/// Makes an ed25519 OpenPGP key with no passphrase; returns its fingerprint.
fn gpg_key(lab: &Lab, user_id: &str) -> String {
    lab.run(
        "gpg",
        &[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            user_id,
            "ed25519",
            "sign",
            "never",
        ],
        lab.path(),
    );
    let listing = lab.run(
        "gpg",
        &["--batch", "--with-colons", "--list-keys", user_id],
        lab.path(),
    );
    listing
        .lines()
        .find_map(|l| l.strip_prefix("fpr:"))
        .map(|rest| rest.trim_matches(':').to_string())
        .unwrap_or_else(|| panic!("no fingerprint in {listing}"))
}

#[test]
fn openpgp_signed_commits() {
    if !have("gpg") || !have("git") {
        eprintln!("SKIPPED openpgp_signed_commits: gpg or git is not installed");
        return;
    }
    let lab = Lab::new();
    let trusted = gpg_key(&lab, "Trusted Signer <trusted@example.invalid>");
    let stranger = gpg_key(&lab, "Stranger <stranger@example.invalid>");
    let armored = lab.run(
        "gpg",
        &["--batch", "--armor", "--export", &trusted],
        lab.path(),
    );
    let keys = keys(&[("release-team.asc", &armored)]);
    assert_eq!(keys.counts(), (1, 0));

    let signing = |fpr: &str| format!("user.signingkey={fpr}");
    let signed = lab.commit(
        "upstreams.conf",
        "upstream api: add api-3",
        &["-c", &signing(&trusted), "-c", "commit.gpgsign=true"],
    );
    let signer = verify_commit_at(&lab.repo(), &signed, &keys)
        .unwrap_or_else(|e| panic!("a commit signed by the trusted key: {e}"));
    assert_eq!(signer.kind, KeyKind::OpenPgp);
    assert_eq!(signer.fingerprint, trusted);
    assert_eq!(signer.identity, "Trusted Signer <trusted@example.invalid>");
    assert_eq!(signer.commit, signed);

    let tampered = lab.tamper(&signed);
    let err = verify_commit_at(&lab.repo(), &tampered, &keys);
    assert!(
        matches!(&err, Err(VerifyError::BadSignature { commit, kind: KeyKind::OpenPgp, key }) if *commit == tampered && *key == trusted),
        "{err:?}"
    );

    let untrusted = lab.commit(
        "upstreams.conf",
        "upstream api: remove api-1",
        &["-c", &signing(&stranger), "-c", "commit.gpgsign=true"],
    );
    let err = verify_commit_at(&lab.repo(), &untrusted, &keys);
    assert!(
        matches!(&err, Err(VerifyError::Untrusted { commit, kind: KeyKind::OpenPgp, key }) if *commit == untrusted && *key == stranger),
        "{err:?}"
    );
    let message = err
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains(&untrusted) && message.contains("not trusted"),
        "{message}"
    );

    let unsigned = lab.commit("upstreams.conf", "unsigned change", &[]);
    let err = verify_commit_at(&lab.repo(), &unsigned, &keys);
    assert!(
        matches!(&err, Err(VerifyError::Unsigned { commit }) if *commit == unsigned),
        "{err:?}"
    );
    let message = err
        .map(|_| ())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.contains(&unsigned) && message.contains("not signed"),
        "{message}"
    );

    // Signed by OpenPGP, but only SSH keys are trusted (`mode: ssh`): refused, although the
    // OpenPGP key is in the Secret.
    let both = keys_and_an_ssh_key(&armored);
    assert_eq!(both.counts(), (1, 1));
    assert!(verify_commit_at(&lab.repo(), &signed, &both).is_ok());
    let ssh_only = keys_and_an_ssh_key(&armored).only(KeyKind::Ssh);
    let err = verify_commit_at(&lab.repo(), &signed, &ssh_only);
    assert!(matches!(err, Err(VerifyError::Untrusted { .. })), "{err:?}");
}

fn keys_and_an_ssh_key(armored: &str) -> TrustedKeys {
    keys(&[
        ("release-team.asc", armored),
        (
            "allowed_signers",
            "someone@example.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
        ),
    ])
}

/// Makes an ed25519 ssh key with no passphrase; returns the private key's path.
fn ssh_key(lab: &Lab, name: &str, comment: &str) -> PathBuf {
    let path = lab.path().join(name);
    let path_str = path.to_string_lossy().into_owned();
    lab.run(
        "ssh-keygen",
        &[
            "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &path_str,
        ],
        lab.path(),
    );
    path
}

#[tokio::test]
async fn ssh_signed_commits() {
    if !have("git") || Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!("SKIPPED ssh_signed_commits: ssh-keygen or git is not installed");
        return;
    }
    let lab = Lab::new();
    let trusted = ssh_key(&lab, "trusted", "signer@example.invalid");
    let stranger = ssh_key(&lab, "stranger", "stranger@example.invalid");
    let public = std::fs::read_to_string(trusted.with_extension("pub"))
        .unwrap_or_else(|e| panic!("read key: {e}"));
    let mut fields = public.split_whitespace();
    let (kind, blob) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
    let allowed = format!(
        "# people who may change the proxies\nsigner@example.invalid namespaces=\"git\" {kind} {blob}\n"
    );
    let keys = keys(&[("allowed_signers", &allowed)]);
    assert_eq!(keys.counts(), (0, 1));

    let sign_with = |key: &Path| {
        vec![
            "-c".to_string(),
            "gpg.format=ssh".to_string(),
            "-c".to_string(),
            format!("user.signingkey={}", key.display()),
            "-c".to_string(),
            "commit.gpgsign=true".to_string(),
        ]
    };
    let args = sign_with(&trusted);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let signed = lab.commit("upstreams.conf", "upstream api: add api-3", &args);
    let signer = verify_commit_at(&lab.repo(), &signed, &keys)
        .unwrap_or_else(|e| panic!("a commit signed by the trusted key: {e}"));
    assert_eq!(signer.kind, KeyKind::Ssh);
    assert_eq!(signer.identity, "signer@example.invalid");
    assert!(signer.fingerprint.starts_with("SHA256:"), "{signer}");
    let expected = lab.run(
        "ssh-keygen",
        &[
            "-l",
            "-E",
            "sha256",
            "-f",
            &trusted.with_extension("pub").to_string_lossy(),
        ],
        lab.path(),
    );
    assert!(
        expected.contains(&signer.fingerprint),
        "{expected} vs {signer}"
    );

    // The same check through the git source, as the controller will call it.
    let cache = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let source = GitSource::new(
        &lab.repo().to_string_lossy(),
        Credentials::None,
        cache.path(),
    )
    .unwrap_or_else(|e| panic!("source: {e}"));
    let revision = source
        .fetch("main")
        .await
        .unwrap_or_else(|e| panic!("fetch: {e}"));
    assert_eq!(revision.commit, signed);
    let via_source = source.verify(&signed, Arc::new(keys_clone(&allowed))).await;
    assert_eq!(
        via_source.ok().map(|s| s.fingerprint),
        Some(signer.fingerprint.clone())
    );

    let tampered = lab.tamper(&signed);
    let err = verify_commit_at(&lab.repo(), &tampered, &keys);
    assert!(
        matches!(&err, Err(VerifyError::BadSignature { commit, kind: KeyKind::Ssh, .. }) if *commit == tampered),
        "{err:?}"
    );

    let args = sign_with(&stranger);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let untrusted = lab.commit("upstreams.conf", "upstream api: remove api-1", &args);
    let err = verify_commit_at(&lab.repo(), &untrusted, &keys);
    assert!(
        matches!(&err, Err(VerifyError::Untrusted { commit, kind: KeyKind::Ssh, key }) if *commit == untrusted && key.starts_with("SHA256:")),
        "{err:?}"
    );

    let unsigned = lab.commit("upstreams.conf", "unsigned change", &[]);
    let err = verify_commit_at(&lab.repo(), &unsigned, &keys);
    assert!(matches!(err, Err(VerifyError::Unsigned { .. })), "{err:?}");

    // An allowed-signers entry limited to other namespaces does not trust the key for git.
    let file_only = allowed.replace("namespaces=\"git\"", "namespaces=\"file\"");
    let other = format!(
        "{file_only}other@example.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n"
    );
    let err = verify_commit_at(&lab.repo(), &signed, &keys_clone(&other));
    assert!(matches!(err, Err(VerifyError::Untrusted { .. })), "{err:?}");

    let missing = verify_commit_at(
        &lab.repo(),
        "0123456789abcdef0123456789abcdef01234567",
        &keys,
    );
    assert!(
        matches!(missing, Err(VerifyError::CommitNotFound { .. })),
        "{missing:?}"
    );
}

fn keys_clone(allowed: &str) -> TrustedKeys {
    keys(&[("allowed_signers", allowed)])
}
