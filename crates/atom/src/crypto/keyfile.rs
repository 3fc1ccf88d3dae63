//! The master key file, `master.key` in the data directory: reading, first-start generation
//! and atomic replacement after a rotation.
//!
//! # Format
//!
//! UTF-8 text, one item a line; blank lines and lines starting with `#` are ignored, and
//! spaces around an item are too:
//!
//! ```text
//! # Atom master keys. ...
//! primary = 2
//! v1:q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=
//! v2:3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
//! ```
//!
//! `v<N>:<key>` is master key version `N` (a decimal from 1), the key being 32 bytes in
//! standard or URL-safe base64, padding optional. Exactly one `primary = <N>` names the key
//! new values are sealed under; it must be one of the listed versions. Each version appears
//! once. This module writes versions in ascending order with standard, padded base64.
//!
//! Invariants: the file is created with mode 0600 from its first byte (no window with wider
//! permissions), a file with any group or other permission bit is refused rather than read,
//! a rewrite replaces the file whole (temporary file, fsync, rename, fsync of the directory),
//! and no error quotes the file's contents.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::CryptoError;
use super::envelope::random_bytes;
use super::keyring::{MasterKeyring, decode_key};

/// The key file's name inside the data directory.
pub const KEY_FILE_NAME: &str = "master.key";

/// Far above any real keyring (about 60 bytes a key); a larger file is not a key file.
const MAX_FILE_LEN: usize = 64 * 1024;

const HEADER: &str = "\
# Atom master keys. Keep this file private (mode 0600) and back it up apart from the
# database: without it the encrypted secrets cannot be read.
# `primary` names the key new values are sealed under; the other keys still open older
# values until those are re-wrapped under the primary.
";

impl MasterKeyring {
    /// Reads a key file, refusing one that group or others may access.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let file = File::open(path).map_err(io_error("open", path))?;
        read_key_file(file, path)
    }

    /// Reads `data_dir/master.key`, or, when there is none, creates the directory (mode 0700)
    /// and a key file (mode 0600) holding one fresh key. `true` means the key was generated
    /// now: the caller should warn that the data directory holds its own master key.
    pub fn load_or_generate(data_dir: &Path) -> Result<(Self, bool), CryptoError> {
        let path = data_dir.join(KEY_FILE_NAME);
        match File::open(&path) {
            Ok(file) => return Ok((read_key_file(file, &path)?, false)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error("open", &path)(err)),
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .map_err(io_error("create the directory", data_dir))?;
        let keyring = Self::generate()?;
        let file = match create_private(&path) {
            Ok(file) => file,
            // Another process starting on the same data directory won the race: use its key.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Ok((Self::load(&path)?, false));
            }
            Err(err) => return Err(io_error("create", &path)(err)),
        };
        if let Err(err) = write_synced(file, keyring.to_text().as_bytes()) {
            // An empty or partial key file would stop the next start; nothing was sealed
            // under this key yet, so removing it loses nothing. A failure to remove is
            // secondary to the write error being returned.
            let _ = fs::remove_file(&path);
            return Err(io_error("write", &path)(err));
        }
        sync_dir(data_dir)?;
        Ok((keyring, true))
    }

    /// Replaces the key file at `path` with this keyring, atomically: readers see the old
    /// file or the new one, never a mix, and a crash leaves at most a stray temporary file.
    pub fn save(&self, path: &Path) -> Result<(), CryptoError> {
        let dir = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let Some(name) = path.file_name() else {
            return Err(CryptoError::KeyFile { path: path.to_owned(), reason: "is not a file path".to_owned() });
        };
        // A random suffix, so that a temporary file left by a crash never blocks the next save.
        let suffix = u64::from_be_bytes(random_bytes()?);
        let tmp = dir.join(format!(".{}.{suffix:016x}.tmp", name.to_string_lossy()));
        let file = create_private(&tmp).map_err(io_error("create", &tmp))?;
        let replaced = write_synced(file, self.to_text().as_bytes())
            .map_err(io_error("write", &tmp))
            .and_then(|()| fs::rename(&tmp, path).map_err(io_error("replace", path)));
        if let Err(err) = replaced {
            // The temporary file holds keys; the original error is what the caller needs.
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        sync_dir(dir)
    }

    /// The key file text. Zeroizing, and reserved up front so that no reallocation copies it.
    fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::with_capacity(HEADER.len() + 32 + 64 * self.versions().count()));
        text.push_str(HEADER);
        text.push_str(&format!("primary = {}\n", self.primary_version()));
        for (version, key) in self.keys() {
            text.push_str(&format!("v{version}:"));
            STANDARD.encode_string(key, &mut text);
            text.push('\n');
        }
        text
    }
}

/// Checks the open file's permissions (of the file opened, not of a path that could change
/// in between), then reads and parses it.
fn read_key_file(mut file: File, path: &Path) -> Result<MasterKeyring, CryptoError> {
    let invalid = |reason: &str| CryptoError::KeyFile { path: path.to_owned(), reason: reason.to_owned() };
    let metadata = file.metadata().map_err(io_error("inspect", path))?;
    if !metadata.is_file() {
        return Err(invalid("is not a regular file"));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::InsecureKeyFile { path: path.to_owned(), mode });
    }
    // Room for the whole limit up front, so that reading never reallocates (and so never
    // leaves a copy of the keys behind); one byte more tells an oversized file.
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_FILE_LEN + 1));
    (&mut file).take(MAX_FILE_LEN as u64 + 1).read_to_end(&mut bytes).map_err(io_error("read", path))?;
    if bytes.len() > MAX_FILE_LEN {
        return Err(invalid("is larger than 64 KiB, too large for a key file"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| invalid("is not UTF-8 text"))?;
    if text.trim().is_empty() {
        // What a first start interrupted between creating and writing the file leaves; no
        // value can have been sealed under a key that was never written.
        return Err(invalid("is empty; if no key was ever in it, remove it to generate one"));
    }
    parse(text).map_err(|reason| CryptoError::KeyFile { path: path.to_owned(), reason })
}

/// Parses key file text; the error is a reason naming the line, never quoting it.
fn parse(text: &str) -> Result<MasterKeyring, String> {
    let mut keys = BTreeMap::new();
    let mut primary = None;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Key lines first: base64 padding contains '=', but base64 never contains ':'.
        if let Some((name, key)) = line.split_once(':') {
            let version = name
                .trim()
                .strip_prefix('v')
                .and_then(parse_version)
                .ok_or_else(|| format!("line {number}: a key line is `v<version>:<base64 key>`, version from 1"))?;
            let key = decode_key(key).map_err(|reason| format!("line {number}: key v{version} {reason}"))?;
            if keys.insert(version, key).is_some() {
                return Err(format!("line {number}: version {version} appears twice"));
            }
        } else if let Some((name, value)) = line.split_once('=')
            && name.trim() == "primary"
        {
            let version = parse_version(value.trim())
                .ok_or_else(|| format!("line {number}: `primary` must be a version number from 1"))?;
            if primary.replace(version).is_some() {
                return Err(format!("line {number}: `primary` is set twice"));
            }
        } else {
            return Err(format!("line {number}: expected `primary = <version>` or `v<version>:<base64 key>`"));
        }
    }
    let primary = primary.ok_or_else(|| "has no `primary = <version>` line".to_owned())?;
    MasterKeyring::from_parts(keys, primary)
}

/// A version number: decimal digits only, at least 1.
fn parse_version(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|version| *version >= 1)
}

/// Creates a new file that only its owner may read or write, failing if the path exists.
fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

fn write_synced(mut file: File, contents: &[u8]) -> io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes a created or renamed directory entry durable, not only the file's contents.
fn sync_dir(dir: &Path) -> Result<(), CryptoError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("sync the directory", dir))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CryptoError {
    let path: PathBuf = path.to_owned();
    move |source| CryptoError::Io { action, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Aad;

    const KEY_A: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    const KEY_B: &str = "3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn place() -> Aad<'static> {
        Aad::new("connector_tokens", "access_token", "row-1", "user-1")
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("exists").permissions().mode() & 0o7777
    }

    #[test]
    fn key_file_round_trips() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        let mut keyring = MasterKeyring::generate().expect("a keyring");
        let old = keyring.encrypt(&place(), b"old").expect("seals");
        keyring.add_key_and_make_primary().expect("adds v2");
        let new = keyring.encrypt(&place(), b"new").expect("seals");
        keyring.save(&path).expect("saves");
        assert_eq!(mode_of(&path), 0o600);

        let loaded = MasterKeyring::load(&path).expect("loads");
        assert_eq!(loaded.primary_version(), 2);
        assert_eq!(loaded.versions().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(loaded.decrypt(&place(), &old).expect("v1 opens").as_slice(), b"old");
        assert_eq!(loaded.decrypt(&place(), &new).expect("v2 opens").as_slice(), b"new");
        assert_eq!(*loaded.to_text(), *keyring.to_text());
    }

    #[test]
    fn save_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        let (mut keyring, _) = MasterKeyring::load_or_generate(dir.path()).expect("generates");
        keyring.add_key_and_make_primary().expect("adds v2");
        keyring.save(&path).expect("saves");

        assert_eq!(MasterKeyring::load(&path).expect("loads").primary_version(), 2);
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).expect("lists").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, [KEY_FILE_NAME]);
    }

    #[test]
    fn generated_key_file_has_mode_0600_and_is_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("atom-data");
        let (first, generated) = MasterKeyring::load_or_generate(&data_dir).expect("generates");
        assert!(generated);
        let path = data_dir.join(KEY_FILE_NAME);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&data_dir), 0o700);

        let stored = first.encrypt(&place(), b"secret").expect("seals");
        let (second, generated) = MasterKeyring::load_or_generate(&data_dir).expect("loads");
        assert!(!generated);
        assert_eq!(second.decrypt(&place(), &stored).expect("same key").as_slice(), b"secret");
    }

    #[test]
    fn key_file_accessible_to_group_or_others_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        MasterKeyring::load_or_generate(dir.path()).expect("generates");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = MasterKeyring::load_or_generate(dir.path()).expect_err("refused");
            assert!(matches!(err, CryptoError::InsecureKeyFile { mode: m, .. } if m == mode), "{err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
            assert!(MasterKeyring::load(&path).is_err());
        }
    }

    #[test]
    fn parse_accepts_comments_spacing_and_either_alphabet() {
        let text = format!("# keys\n\n  primary = 7 \nv3:{KEY_A}\r\n   v7 : {KEY_B}  \n");
        let keyring = parse(&text).expect("parses");
        assert_eq!(keyring.primary_version(), 7);
        assert_eq!(keyring.versions().collect::<Vec<_>>(), [3, 7]);
    }

    #[test]
    fn parse_errors_name_the_line_and_never_quote_it() {
        let cases = [
            (format!("v1:{KEY_A}\n"), "no `primary"),
            (format!("primary = 2\nv1:{KEY_A}\n"), "primary = 2 names no key"),
            ("primary = 1\n".to_owned(), "holds no key"),
            (format!("primary = 1\nv1:{KEY_A}\nv1:{KEY_B}\n"), "line 3: version 1 appears twice"),
            (format!("primary = 1\nprimary = 1\nv1:{KEY_A}\n"), "line 2: `primary` is set twice"),
            (format!("primary = 0\nv1:{KEY_A}\n"), "line 1: `primary` must be"),
            (format!("primary = 1\nv0:{KEY_A}\n"), "line 2: a key line"),
            (format!("primary = 1\nkey1:{KEY_A}\n"), "line 2: a key line"),
            ("primary = 1\nv1:c2VjcmV0LXZhbHVl\n".to_owned(), "line 2: key v1 decodes to 12 bytes"),
            ("primary = 1\nv1:s3cr3t!value\n".to_owned(), "line 2: key v1 is not valid base64"),
            (format!("primary = 1\n{KEY_A}\n"), "line 2: expected"),
        ];
        for (text, expected) in cases {
            let reason = parse(&text).map(|_| ()).expect_err(expected);
            assert!(reason.contains(expected), "{reason:?} lacks {expected:?}");
            for secret in [KEY_A, KEY_B, "c2VjcmV0LXZhbHVl", "s3cr3t"] {
                assert!(!reason.contains(secret), "{reason:?} quotes the file");
            }
        }
    }

    #[test]
    fn unreadable_contents_are_a_clear_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(KEY_FILE_NAME);
        for contents in [vec![0xff, 0xfe, 0x00], vec![b'#'; MAX_FILE_LEN + 1], Vec::new()] {
            let _ = fs::remove_file(&path);
            create_private(&path).and_then(|file| write_synced(file, &contents)).expect("writes");
            let err = MasterKeyring::load(&path).expect_err("refused");
            assert!(matches!(err, CryptoError::KeyFile { .. }), "{err}");
        }
        assert!(matches!(MasterKeyring::load(dir.path()), Err(CryptoError::KeyFile { .. })));
    }
}
