//! Git sources, read in-process with gix: history (all commits, or a range) and the staged
//! changes (the index against HEAD).
//!
//! History is walked parents first (reversed topological order), each commit diffed against
//! its first parent by comparing trees entry by entry (unchanged subtrees are skipped by id, so a
//! commit costs what it changed, not the size of its tree). Each blob is scanned once, the first
//! time a commit introduces it, and its findings are attributed to that commit. When a commit
//! modifies a file, a finding whose secret already occurred in the previous version of the file
//! is dropped: the secret was introduced earlier and reported there, like gitleaks, which
//! scans only added lines.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use gix::ObjectId;
use gix::revision::walk::Sorting;

use super::detect::{Chunk, CommitMeta, Detector, Finding};
use super::{ScanOptions, ScanStats, SecretsError, is_binary};

/// Which commits a history scan covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum GitRange {
    /// Every commit reachable from HEAD.
    #[default]
    All,
    /// Commits reachable from HEAD but not from this revision (`REF..HEAD`).
    Since(String),
    /// `A..B`: commits reachable from B but not from A.
    Range { from: String, to: String },
}

impl GitRange {
    /// Parses `A..B`, or a bare revision meaning `REV..HEAD`.
    pub fn parse(spec: &str) -> GitRange {
        match spec.split_once("..") {
            Some((from, to)) => {
                GitRange::Range { from: from.to_owned(), to: if to.is_empty() { "HEAD".into() } else { to.to_owned() } }
            }
            None => GitRange::Since(spec.to_owned()),
        }
    }
}

fn git_err(e: impl std::fmt::Display) -> SecretsError {
    SecretsError::Git(e.to_string())
}

fn open(path: &Path) -> Result<gix::Repository, SecretsError> {
    gix::discover(path).map_err(git_err)
}

fn resolve(repo: &gix::Repository, spec: &str) -> Result<ObjectId, SecretsError> {
    let id = repo.rev_parse_single(spec).map_err(|e| SecretsError::Git(format!("{spec}: {e}")))?;
    let commit =
        id.object().map_err(git_err)?.peel_to_commit().map_err(|e| SecretsError::Git(format!("{spec}: {e}")))?;
    Ok(commit.id)
}

/// A changed blob: its path, new id and the id it replaced at the same path.
struct Change {
    path: String,
    id: ObjectId,
    previous: Option<ObjectId>,
}

fn tree_entries(
    repo: &gix::Repository,
    tree: Option<ObjectId>,
) -> Result<HashMap<Vec<u8>, (gix::object::tree::EntryMode, ObjectId)>, SecretsError> {
    let mut map = HashMap::new();
    let Some(id) = tree else { return Ok(map) };
    let tree = repo.find_tree(id).map_err(git_err)?;
    for entry in tree.iter() {
        let entry = entry.map_err(git_err)?;
        map.insert(entry.filename().to_vec(), (entry.mode(), entry.oid().to_owned()));
    }
    Ok(map)
}

fn diff_trees(
    repo: &gix::Repository,
    old: Option<ObjectId>,
    new: ObjectId,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), SecretsError> {
    if old == Some(new) {
        return Ok(());
    }
    let old_entries = tree_entries(repo, old)?;
    let tree = repo.find_tree(new).map_err(git_err)?;
    for entry in tree.iter() {
        let entry = entry.map_err(git_err)?;
        let mode = entry.mode();
        let id = entry.oid().to_owned();
        let name = entry.filename();
        let previous = old_entries.get(name.as_ref() as &[u8]);
        if previous.is_some_and(|(_, p)| *p == id) {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(name));
        if mode.is_tree() {
            let old_sub = previous.filter(|(m, _)| m.is_tree()).map(|(_, p)| *p);
            diff_trees(repo, old_sub, id, &format!("{path}/"), out)?;
        } else if mode.is_blob() {
            out.push(Change { path, id, previous: previous.filter(|(m, _)| m.is_blob()).map(|(_, p)| *p) });
        }
    }
    Ok(())
}

fn commit_meta(commit: &gix::Commit<'_>) -> Result<CommitMeta, SecretsError> {
    let author = commit.author().map_err(git_err)?;
    let date = author
        .time()
        .ok()
        .and_then(|t| jiff::Timestamp::from_second(t.seconds).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(CommitMeta {
        id: commit.id.to_string(),
        author: author.name.to_string(),
        email: author.email.to_string(),
        date,
        message: commit.message_raw_sloppy().to_string().trim().to_owned(),
    })
}

struct BlobScanner<'a> {
    repo: &'a gix::Repository,
    detector: &'a Detector,
    options: &'a ScanOptions,
    stats: &'a mut ScanStats,
}

impl BlobScanner<'_> {
    fn scan(&mut self, change: &Change, meta: &CommitMeta) -> Result<Vec<Finding>, SecretsError> {
        if self.detector.path_allowed(&change.path) {
            return Ok(Vec::new());
        }
        let blob = self.repo.find_object(change.id).map_err(git_err)?;
        let data = &blob.data;
        if self.options.max_file_size > 0 && data.len() as u64 > self.options.max_file_size {
            self.stats.skipped_large += 1;
            return Ok(Vec::new());
        }
        if is_binary(data) {
            self.stats.skipped_binary += 1;
            return Ok(Vec::new());
        }
        self.stats.blobs += 1;
        self.stats.bytes += data.len() as u64;
        let mut findings = self.detector.detect(&Chunk { data, path: &change.path, commit: Some(meta) });
        if !findings.is_empty()
            && let Some(prev) = change.previous
        {
            let old = self.repo.find_object(prev).map_err(git_err)?;
            findings.retain(|f| memchr::memmem::find(&old.data, f.secret.as_bytes()).is_none());
        }
        Ok(findings)
    }
}

/// Scans the history of the repository containing `path`.
pub fn scan_history(
    detector: &Detector,
    path: &Path,
    range: &GitRange,
    options: &ScanOptions,
    stats: &mut ScanStats,
) -> Result<Vec<Finding>, SecretsError> {
    let repo = open(path)?;
    let (tip, hidden) = match range {
        GitRange::All => (head(&repo)?, Vec::new()),
        GitRange::Since(r) => (head(&repo)?, vec![resolve(&repo, r)?]),
        GitRange::Range { from, to } => (Some(resolve(&repo, to)?), vec![resolve(&repo, from)?]),
    };
    let Some(tip) = tip else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    for info in
        repo.rev_walk([tip]).sorting(Sorting::TopoOrder).with_hidden(hidden.iter().copied()).all().map_err(git_err)?
    {
        ids.push(info.map_err(git_err)?.id);
    }
    ids.reverse();

    // Blobs already present at the range's lower bound were introduced before the range: they
    // are not new there, even when a commit inside the range copies them to a new path.
    let mut seen: HashSet<ObjectId> = HashSet::new();
    for &boundary in &hidden {
        let tree = repo.find_commit(boundary).map_err(git_err)?.tree_id().map_err(git_err)?.detach();
        let mut blobs = HashMap::new();
        flatten(&repo, tree, "", &mut blobs)?;
        seen.extend(blobs.into_values());
    }
    let mut findings = Vec::new();
    let mut scanner = BlobScanner { repo: &repo, detector, options, stats };
    for id in ids {
        let commit = repo.find_commit(id).map_err(git_err)?;
        let tree = commit.tree_id().map_err(git_err)?.detach();
        let parent_tree = match commit.parent_ids().next() {
            Some(p) => Some(repo.find_commit(p).map_err(git_err)?.tree_id().map_err(git_err)?.detach()),
            None => None,
        };
        let mut changes = Vec::new();
        diff_trees(&repo, parent_tree, tree, "", &mut changes)?;
        scanner.stats.commits += 1;
        if changes.iter().all(|c| seen.contains(&c.id)) {
            continue;
        }
        let meta = commit_meta(&commit)?;
        for change in changes {
            if !seen.insert(change.id) {
                continue;
            }
            findings.extend(scanner.scan(&change, &meta)?);
        }
    }
    Ok(findings)
}

fn head(repo: &gix::Repository) -> Result<Option<ObjectId>, SecretsError> {
    // An unborn HEAD (a repository without commits) has no history to scan.
    match repo.head_id() {
        Ok(id) => Ok(Some(id.detach())),
        Err(_) if repo.head().map(|h| h.is_unborn()).unwrap_or(false) => Ok(None),
        Err(e) => Err(git_err(e)),
    }
}

fn flatten(
    repo: &gix::Repository,
    tree: ObjectId,
    prefix: &str,
    out: &mut HashMap<String, ObjectId>,
) -> Result<(), SecretsError> {
    let tree = repo.find_tree(tree).map_err(git_err)?;
    for entry in tree.iter() {
        let entry = entry.map_err(git_err)?;
        let path = format!("{prefix}{}", String::from_utf8_lossy(entry.filename()));
        let id = entry.oid().to_owned();
        if entry.mode().is_tree() {
            flatten(repo, id, &format!("{path}/"), out)?;
        } else if entry.mode().is_blob() {
            out.insert(path, id);
        }
    }
    Ok(())
}

/// Scans what is staged: index entries that differ from HEAD (all of them before the first
/// commit). Findings carry no commit.
pub fn scan_staged(
    detector: &Detector,
    path: &Path,
    options: &ScanOptions,
    stats: &mut ScanStats,
) -> Result<Vec<Finding>, SecretsError> {
    let repo = open(path)?;
    let mut committed = HashMap::new();
    if let Some(head) = head(&repo)? {
        let tree = repo.find_commit(head).map_err(git_err)?.tree_id().map_err(git_err)?.detach();
        flatten(&repo, tree, "", &mut committed)?;
    }
    let index = repo.index_or_empty().map_err(git_err)?;
    let meta = CommitMeta::default();
    let mut scanner = BlobScanner { repo: &repo, detector, options, stats };
    let mut findings = Vec::new();
    for entry in index.entries() {
        use gix::index::entry::{Mode, Stage};
        if entry.stage() != Stage::Unconflicted || !(entry.mode == Mode::FILE || entry.mode == Mode::FILE_EXECUTABLE) {
            continue;
        }
        let path = entry.path(&index).to_string();
        let previous = committed.get(&path).copied();
        if previous == Some(entry.id) {
            continue;
        }
        let change = Change { path, id: entry.id, previous };
        findings.extend(scanner.scan(&change, &meta)?.into_iter().map(|mut f| {
            f.commit.clear();
            f.fingerprint = f.short_fingerprint();
            f
        }));
    }
    Ok(findings)
}
