#!/usr/bin/env python3
"""Builds the fuzz corpora, fuzz/corpus/<target>/, from the committed seeds (fuzz/seeds/<target>/)
and the project's fixtures: the example config directories (examples/), their single nginx
files, and the webhook payload samples of the tests (controller/tests/fixtures/webhooks/),
wrapped with their provider's headers and a right signature for the fuzz secret.

`--seeds` writes the fixture-derived inputs into fuzz/seeds/ instead (they are small and
committed, so the `cargo test` smoke runs over them too). The framing is the one of
controller/src/fuzzing/mod.rs: a line `=== <path>` starts a file."""

import hashlib
import hmac
import os
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = ["nginx_parse", "render", "webhook", "agent_apply", "agent_ingest", "agent_report"]
SECRET = b"fuzz-hook-secret"  # controller/src/fuzzing/webhook.rs SECRET
SKIP = {"README.md"}


def framed(directory):
    out = b""
    for base, dirs, files in os.walk(directory):
        dirs.sort()
        for name in sorted(files):
            if name in SKIP:
                continue
            path = os.path.join(base, name)
            rel = os.path.relpath(path, directory)
            with open(path, "rb") as f:
                out += b"=== " + rel.encode() + b"\n" + f.read()
    return out


def webhook_inputs():
    fixtures = os.path.join(ROOT, "controller/tests/fixtures/webhooks")
    headers = {
        "github": lambda sig: [("x-github-event", "push"), ("x-github-delivery", "d-1"),
                               ("x-hub-signature-256", "sha256=" + sig)],
        "gitlab": lambda sig: [("x-gitlab-event", "Push Hook"),
                               ("x-gitlab-token", SECRET.decode())],
        "gitea": lambda sig: [("x-gitea-event", "push"), ("x-gitea-signature", sig)],
        "bitbucket": lambda sig: [("x-event-key", "repo:push"),
                                  ("x-hub-signature", "sha256=" + sig)],
        "generic": lambda sig: [("x-switchback-signature", "sha256=" + sig)],
    }
    for name in sorted(os.listdir(fixtures)):
        provider = name.split("-")[0]
        if provider not in headers:
            continue
        with open(os.path.join(fixtures, name), "rb") as f:
            body = f.read()
        sig = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        head = "".join(f"{k}: {v}\n" for k, v in headers[provider](sig))
        yield f"{provider}-push", (provider + "\n" + head + "\n").encode() + body
        if provider == "gitea":
            alt = head.replace("x-gitea-", "x-forgejo-")
            yield "forgejo-push", ("forgejo\n" + alt + "\n").encode() + body


def derived():
    """(target, name, bytes) for every fixture-derived input."""
    examples = os.path.join(ROOT, "examples")
    for ex in ["basic", "broken", "official-layout"]:
        data = framed(os.path.join(examples, ex))
        yield "render", f"example-{ex}", data
        yield "agent_apply", f"example-{ex}", data
        if ex == "official-layout":
            yield "nginx_parse", f"example-{ex}", data
    for base, _, files in os.walk(examples):
        for name in sorted(files):
            if name.endswith(".conf") or name == "nginx.conf":
                rel = os.path.relpath(os.path.join(base, name), examples).replace("/", "-")
                with open(os.path.join(base, name), "rb") as f:
                    yield "nginx_parse", f"file-{rel}", f.read()
    for name, data in webhook_inputs():
        yield "webhook", name, data


def main():
    seeds_only = "--seeds" in sys.argv[1:]
    for target in TARGETS:
        seeds = os.path.join(ROOT, "fuzz/seeds", target)
        if seeds_only:
            continue
        corpus = os.path.join(ROOT, "fuzz/corpus", target)
        os.makedirs(corpus, exist_ok=True)
        for name in sorted(os.listdir(seeds)):
            shutil.copyfile(os.path.join(seeds, name), os.path.join(corpus, "seed-" + name))
    counts = {}
    for target, name, data in derived():
        where = "seeds" if seeds_only else "corpus"
        directory = os.path.join(ROOT, "fuzz", where, target)
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)
        counts[target] = counts.get(target, 0) + 1
    for target in TARGETS:
        where = "seeds" if seeds_only else "corpus"
        n = len(os.listdir(os.path.join(ROOT, "fuzz", where, target)))
        print(f"fuzz/{where}/{target}: {n} inputs")


if __name__ == "__main__":
    main()
