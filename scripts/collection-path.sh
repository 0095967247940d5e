#!/usr/bin/env bash
# Make the collection importable as lifeboat.backup:
#   .build/collections/ansible_collections/lifeboat/backup -> the clone (a symlink, for
#       ansible-playbook, Molecule and the tests: edits are seen at once);
#   .build/sanity/ansible_collections/lifeboat/backup (a copy: ansible-test resolves
#       the working directory and needs it physically under ansible_collections/).
source "$(dirname "$0")/common.sh"

link="${BUILD}/collections/ansible_collections/lifeboat/backup"
mkdir -p "$(dirname "$link")"
ln -sfn "${ROOT}" "$link"

if [ "${1:-}" = "--copy" ]; then
    copy="${BUILD}/sanity/ansible_collections/lifeboat/backup"
    mkdir -p "$copy"
    # Tracked and new-but-not-ignored files only: what a clean clone would hold.
    (cd "${ROOT}" && git ls-files -z --cached --others --exclude-standard) |
        rsync -a --delete --from0 --files-from=- "${ROOT}/" "$copy/"
    # rsync --files-from does not delete files gone from the list; prune them.
    # (Not the copy's own .git below: in a git worktree the clone's .git is a file, and the
    # prune would empty the copy's repository.)
    (cd "$copy" && find . -path ./.git -prune -o -type f -print0) | while IFS= read -r -d '' f; do
        [ -e "${ROOT}/$f" ] || rm -f "$copy/$f"
    done
    # ansible-test lists files with git when it finds a repository above the collection; the
    # clone's own .git (which ignores .build/) would hide everything, so the copy gets its own.
    [ -d "$copy/.git" ] || git -C "$copy" init -q
    echo "$copy"
fi
