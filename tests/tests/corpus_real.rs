//! Switchback on real nginx configs from public repositories (issue 14, item 4).
//!
//! `tests/corpus/real/SOURCES.tsv` lists every file of the corpus with its repository, path,
//! commit, licence and sha256; `tests/corpus/real/get.sh` downloads them into
//! `tests/corpus/real/files/` and writes crossplane 0.5.8's output beside each one (see the
//! README there for why the files themselves are not in git). Three tests:
//! - the provenance table is complete (always runs);
//! - `switchback parse --single-file` prints what `crossplane parse --single-file` printed, for
//!   every file except those listed in `DIFFERENCES.tsv`;
//! - `switchback validate` on every whole config, alone as `nginx.conf`, passes on at least as many
//!   files as it did when the figure in [`VALIDATE_AS_THEY_ARE`] was measured.
//!
//! The corpus directory is `$SWITCHBACK_REAL_CORPUS`, else `tests/corpus/real/files`. When it is
//! absent the two corpus tests say so on stderr and pass, unless `SWITCHBACK_REQUIRE_REAL_CORPUS`
//! is set, when they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use sha2::{Digest, Sha256};
use switchback_tests::bin::switchback_bin;
use switchback_tests::json_diff::first_diff;

/// Whole configs of the corpus that `switchback validate` accepted as they are when this was
/// last measured (see the README). Raise it when validation improves; a drop is a regression.
const VALIDATE_AS_THEY_ARE: usize = 8;

/// Licences the corpus may hold: they all permit redistribution with attribution.
const LICENCES: &[&str] = &[
    "MIT",
    "Apache-2.0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "MPL-2.0",
    "CC0-1.0",
    "Unlicense",
];

/// crossplane's analyzer messages (directive contexts and argument counts), which Switchback's
/// parser leaves to lint rules and `nginx -t`.
const ANALYZER_ERRORS: &[&str] = &["is not allowed here", "invalid number of arguments"];

/// One row of `SOURCES.tsv`.
struct Source {
    file: String,
    repo: String,
    path: String,
    commit: String,
    licence: String,
    sha256: String,
    whole_config: bool,
    note: String,
}

fn real_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.join("corpus/real")
}

fn sources() -> Result<Vec<Source>> {
    let path = real_dir().join("SOURCES.tsv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    ensure!(
        header == "file\trepo\tpath\tcommit\tlicence\tsha256\twhole_config\tnote",
        "{}: unexpected header {header:?}",
        path.display()
    );
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        ensure!(
            f.len() == 8,
            "{}:{}: {} columns, want 8",
            path.display(),
            i + 2,
            f.len()
        );
        let whole_config = match f[6] {
            "true" => true,
            "false" => false,
            other => bail!("{}:{}: whole_config {other:?}", path.display(), i + 2),
        };
        out.push(Source {
            file: f[0].to_owned(),
            repo: f[1].to_owned(),
            path: f[2].to_owned(),
            commit: f[3].to_owned(),
            licence: f[4].to_owned(),
            sha256: f[5].to_owned(),
            whole_config,
            note: f[7].to_owned(),
        });
    }
    Ok(out)
}

/// Files whose difference from crossplane is documented, from `DIFFERENCES.tsv`
/// (`file`, `what differs`, `why switchback follows nginx`).
fn differences() -> Result<BTreeMap<String, String>> {
    let path = real_dir().join("DIFFERENCES.tsv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        ensure!(
            f.len() == 3 && f.iter().all(|c| !c.trim().is_empty()),
            "{}:{}: want file, what differs, why (3 non-empty columns)",
            path.display(),
            i + 1
        );
        out.insert(f[0].to_owned(), f[1].to_owned());
    }
    Ok(out)
}

/// The materialised corpus, or `None` (said on stderr) when it is absent and not required.
fn corpus_dir(test: &str) -> Result<Option<PathBuf>> {
    let dir = std::env::var_os("SWITCHBACK_REAL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| real_dir().join("files"));
    if dir.is_dir() {
        return Ok(Some(dir));
    }
    let msg = format!(
        "{test}: the real-config corpus is not at {} (run tests/corpus/real/get.sh, or set \
         SWITCHBACK_REAL_CORPUS)",
        dir.display()
    );
    if std::env::var_os("SWITCHBACK_REQUIRE_REAL_CORPUS").is_some() {
        bail!("{msg}");
    }
    eprintln!("SKIPPED {msg}");
    Ok(None)
}

/// Reads a corpus file and checks it is the one `SOURCES.tsv` describes.
fn checked_bytes(dir: &Path, s: &Source) -> Result<Vec<u8>> {
    let path = dir.join(&s.file);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let got = hex::encode(Sha256::digest(&bytes));
    ensure!(
        got == s.sha256,
        "{}: sha256 {got}, SOURCES.tsv records {} ({} {} {})",
        s.file,
        s.sha256,
        s.repo,
        s.commit,
        s.path
    );
    Ok(bytes)
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))
}

/// The crossplane output a file is compared with: the command's own output, or, when crossplane's
/// analyzer rejected the file (a snippet parsed as a whole nginx.conf), crossplane's parser with
/// the analyzer off; the command's output must then hold analyzer errors and nothing else.
fn expected(dir: &Path, file: &str) -> Result<Value> {
    let cli = read_json(&dir.join(format!("{file}.crossplane.json")))?;
    let no_analyzer = dir.join(format!("{file}.crossplane-noanalyzer.json"));
    if !no_analyzer.is_file() {
        return Ok(cli);
    }
    let errors = cli["errors"].as_array().cloned().unwrap_or_default();
    ensure!(
        !errors.is_empty(),
        "{file}: a no-analyzer output but crossplane had no errors"
    );
    for e in &errors {
        let msg = e["error"].as_str().unwrap_or_default();
        ensure!(
            ANALYZER_ERRORS.iter().any(|a| msg.contains(a)),
            "{file}: crossplane error {msg:?} is not an analyzer error"
        );
    }
    read_json(&no_analyzer)
}

#[test]
fn sources_tsv_records_provenance_and_a_permissive_licence_for_at_least_50_files() -> Result<()> {
    let sources = sources()?;
    ensure!(sources.len() >= 50, "only {} files", sources.len());
    let mut names = BTreeSet::new();
    for (i, s) in sources.iter().enumerate() {
        let prefix = format!("{:03}-", i + 1);
        ensure!(
            s.file.starts_with(&prefix) && !s.file.contains('/'),
            "{}: want a name starting {prefix}",
            s.file
        );
        ensure!(names.insert(s.file.clone()), "{}: listed twice", s.file);
        ensure!(
            s.repo.split('/').count() == 2 && !s.path.is_empty() && !s.path.starts_with('/'),
            "{}: repo {:?} path {:?}",
            s.file,
            s.repo,
            s.path
        );
        ensure!(
            s.commit.len() == 40 && s.commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}: commit {:?} is not 40 hex digits",
            s.file,
            s.commit
        );
        ensure!(
            s.sha256.len() == 64 && s.sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "{}: sha256 {:?}",
            s.file,
            s.sha256
        );
        ensure!(
            LICENCES.contains(&s.licence.as_str()),
            "{}: licence {:?} is not one that permits redistribution",
            s.file,
            s.licence
        );
        ensure!(!s.note.trim().is_empty(), "{}: no note", s.file);
    }
    let whole = sources.iter().filter(|s| s.whole_config).count();
    ensure!(
        whole >= 10 && sources.len() - whole >= 10,
        "{whole} whole configs of {}: want both whole configs and snippets",
        sources.len()
    );
    let listed = differences()?;
    for file in listed.keys() {
        ensure!(
            names.contains(file),
            "DIFFERENCES.tsv lists {file}, not in SOURCES.tsv"
        );
    }
    Ok(())
}

#[test]
fn switchback_parse_single_file_prints_what_crossplane_printed_on_the_real_corpus() -> Result<()> {
    let Some(dir) = corpus_dir("corpus_real::parse")? else {
        return Ok(());
    };
    let listed = differences()?;
    let bin = switchback_bin();
    let (mut agree, mut failures, mut stale) = (0, Vec::new(), Vec::new());
    for s in sources()? {
        checked_bytes(&dir, &s)?;
        let theirs = expected(&dir, &s.file)?;
        // Run where crossplane ran, with the same relative name, so `file` fields compare.
        let out = Command::new(&bin)
            .current_dir(&dir)
            .args(["parse", "--single-file", "--format", "json"])
            .arg(&s.file)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let diff = match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(ours) => first_diff(&ours, &theirs, ""),
            Err(_) => Some(format!(
                "not JSON (exit {:?}): {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or_default()
            )),
        };
        match (diff, listed.get(&s.file)) {
            (None, None) => agree += 1,
            (None, Some(_)) => stale.push(s.file.clone()),
            (Some(_), Some(_)) => {}
            (Some(d), None) => failures.push(format!("{}: {d}", s.file)),
        }
    }
    eprintln!(
        "{agree} files agree with crossplane, {} documented differences",
        listed.len()
    );
    ensure!(
        stale.is_empty(),
        "these files now agree with crossplane: remove them from DIFFERENCES.tsv: {stale:?}"
    );
    ensure!(
        failures.is_empty(),
        "{} files differ from crossplane and are not in DIFFERENCES.tsv:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn switchback_validate_accepts_at_least_the_measured_number_of_whole_real_configs() -> Result<()> {
    let Some(dir) = corpus_dir("corpus_real::validate")? else {
        return Ok(());
    };
    let bin = switchback_bin();
    let (mut passed, mut total) = (0, 0);
    for s in sources()?.into_iter().filter(|s| s.whole_config) {
        total += 1;
        let bytes = checked_bytes(&dir, &s)?;
        let bundle = tempfile::tempdir()?;
        std::fs::write(bundle.path().join("nginx.conf"), &bytes)?;
        let out = Command::new(&bin)
            .arg("validate")
            .arg(bundle.path())
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if out.status.success() {
            passed += 1;
            eprintln!("{}: validates", s.file);
            continue;
        }
        // Diagnostics name the temporary bundle; show them relative to it.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .replace(&format!("{}/", bundle.path().display()), "");
        let first = text
            .lines()
            .find(|l| l.contains(": error[") || l.starts_with("error"))
            .or_else(|| text.lines().next())
            .unwrap_or("(no output)");
        eprintln!("{}: exit {:?}: {first}", s.file, out.status.code());
    }
    eprintln!("{passed} of {total} whole configs validate as they are");
    ensure!(
        passed >= VALIDATE_AS_THEY_ARE,
        "{passed} of {total} whole configs validate, fewer than the {VALIDATE_AS_THEY_ARE} measured"
    );
    Ok(())
}
