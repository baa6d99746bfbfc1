#!/bin/sh
# Downloads the corpus listed in SOURCES.tsv into files/ (or $1), checks each file against its
# recorded sha256, and writes crossplane's output beside each file. See README.md.
#
#   tests/corpus/real/get.sh [DIR]
#
# CORPUS_BASE_URL  where files are read from as $CORPUS_BASE_URL/<owner>/<name>/<commit>/<path>
#                  (default https://raw.githubusercontent.com)
# CROSSPLANE       crossplane 0.5.8 (default .tools/venv/bin/crossplane of this checkout)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-$here/files}
base=${CORPUS_BASE_URL:-https://raw.githubusercontent.com}
crossplane=${CROSSPLANE:-$root/.tools/venv/bin/crossplane}
python=$(dirname "$crossplane")/python
mkdir -p "$out"
tail -n +2 "$here/SOURCES.tsv" | while IFS='	' read -r file repo path commit licence sha whole note; do
  curl -fsSL --max-time 60 -o "$out/$file" "$base/$repo/$commit/$path"
  got=$(sha256sum "$out/$file" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "$file: sha256 $got, SOURCES.tsv says $sha ($repo $commit $path)" >&2
    exit 1
  fi
  # The command a crossplane user runs.
  (cd "$out" && "$crossplane" parse --single-file "$file" > "$file.crossplane.json")
  # crossplane's parser with its analyzer off (directive contexts and argument counts), for
  # files its analyzer rejects: snippets parsed as if they were a whole nginx.conf.
  if grep -q 'is not allowed here\|invalid number of arguments' "$out/$file.crossplane.json"; then
    (cd "$out" && "$python" -c 'import sys, crossplane
from crossplane.__main__ import _dump_payload
_dump_payload(crossplane.parse(sys.argv[1], single=True, check_ctx=False, check_args=False), sys.stdout, None)' \
      "$file" > "$file.crossplane-noanalyzer.json")
  fi
done
echo "corpus in $out"
