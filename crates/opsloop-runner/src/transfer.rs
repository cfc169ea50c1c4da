//! Moving job files between machines as tar archives: the pipeline's source and upstream
//! artifacts to an agent, the job's artifacts back. Unpacking trusts nothing in the archive:
//! only regular files and directories, never a path that leaves the target.

use std::io::{self, Read};
use std::path::{Component, Path};

/// A tar archive of `files` (paths relative to `root`), in memory. Symbolic links are left
/// out, never followed: a committed link to `/etc/…` or the server's data must not carry that
/// file's contents to another machine.
pub fn pack(root: &Path, files: &[String]) -> io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    for file in files {
        let path = root.join(file);
        if std::fs::symlink_metadata(&path)?.file_type().is_symlink() {
            continue;
        }
        builder.append_path_with_name(path, file)?;
    }
    builder.into_inner()
}

/// A tar archive of every file under `root` (empty when `root` does not exist).
pub fn pack_tree(root: &Path) -> io::Result<Vec<u8>> {
    let files = if root.is_dir() { crate::workspace::list_tree(root)? } else { Vec::new() };
    pack(root, &files)
}

/// Unpacks `archive` into `target` and returns the files it held. Links, devices and paths
/// that are absolute or climb out with `..` are refused.
pub fn unpack(archive: impl Read, target: &Path) -> io::Result<Vec<String>> {
    std::fs::create_dir_all(target)?;
    let mut archive = tar::Archive::new(archive);
    let mut files = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path()?.into_owned();
        let inside = path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the archive names `{}`, outside its directory", path.display()),
            ));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if !entry.unpack_in(target)? {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "an archive entry leaves its directory"));
                }
                files.push(path.to_string_lossy().into_owned());
            }
            tar::EntryType::Directory => {
                entry.unpack_in(target)?;
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the archive holds `{}`, a {other:?} entry; only files and directories are accepted",
                        path.display()
                    ),
                ));
            }
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_with_their_modes() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(from.path().join("bin")).unwrap();
        std::fs::write(from.path().join("bin/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(from.path().join("README"), "read me").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(from.path().join("bin/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let archive = pack_tree(from.path()).unwrap();
        let to = tempfile::tempdir().unwrap();
        let mut files = unpack(archive.as_slice(), to.path()).unwrap();
        files.sort();
        assert_eq!(files, ["README", "bin/run.sh"]);
        assert_eq!(std::fs::read_to_string(to.path().join("README")).unwrap(), "read me");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(to.path().join("bin/run.sh")).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111);
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_are_not_followed_when_packing() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "server secret").unwrap();
        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("kept"), "kept").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), from.path().join("leak")).unwrap();
        let archive = pack_tree(from.path()).unwrap();
        assert!(!archive.windows(13).any(|w| w == b"server secret"), "a link's target is never packed");
        let to = tempfile::tempdir().unwrap();
        assert_eq!(unpack(archive.as_slice(), to.path()).unwrap(), ["kept"]);
    }

    #[test]
    fn links_and_escaping_paths_are_refused() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, "etc", "/etc").unwrap();
        let archive = builder.into_inner().unwrap();
        let to = tempfile::tempdir().unwrap();
        assert!(unpack(archive.as_slice(), to.path()).is_err());
        assert!(!to.path().join("etc").exists());

        // A raw header can name `../x`, which the builder itself would refuse to write.
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_entry_type(tar::EntryType::Regular);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_cksum();
        let mut raw = header.as_bytes().to_vec();
        raw.extend_from_slice(b"hi");
        raw.resize(raw.len() + 510, 0);
        raw.extend_from_slice(&[0; 1024]);
        let to = tempfile::tempdir().unwrap();
        assert!(unpack(raw.as_slice(), to.path()).is_err());
        assert!(!to.path().parent().unwrap().join("escaped").exists());
    }
}
