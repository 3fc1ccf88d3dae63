//! `manifest.json`: what an archive holds and how to check it. Reading a manifest checks
//! its shape (format, file names); [`Manifest::check_files`] checks the files against their
//! sizes and SHA-256; [`Manifest::check_tables`] compares digests recomputed from restored
//! data with the recorded ones.
//!
//! Nothing here trusts the manifest's own integrity: a verification recomputes every size,
//! checksum, count and hash from the data, so an edited manifest is found as a mismatch.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BackupError;
use crate::storage::snapshot::TableDigest;

pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest format this binary writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The data file of a SQLite archive: the database itself.
pub const SQLITE_FILE: &str = "database.sqlite";
/// The data file of a PostgreSQL archive: `pg_dump -Fc` output.
pub const POSTGRES_FILE: &str = "database.pgdump";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(kind: &str) -> Self {
        if kind == "postgres" { Self::Postgres } else { Self::Sqlite }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    pub fn data_file(self) -> &'static str {
        match self {
            Self::Sqlite => SQLITE_FILE,
            Self::Postgres => POSTGRES_FILE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Unknown fields are ignored, so that a later 1.x writer may add some; a change older
/// readers must not misread bumps `format`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub atom_version: String,
    pub backend: Backend,
    /// The highest migration applied in the archived database.
    pub schema_version: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub tables: Vec<TableEntry>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// Reads `dir/manifest.json` and checks its shape.
    pub fn read(dir: &Path) -> Result<Self, BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::NotAnArchive { dir: dir.to_path_buf() });
            }
            Err(source) => return Err(BackupError::Io { action: "read", path, source }),
        };
        let manifest: Self =
            serde_json::from_slice(&bytes).map_err(|source| BackupError::ManifestUnreadable { path, source })?;
        if manifest.format != FORMAT_VERSION {
            return Err(BackupError::UnsupportedFormat { found: manifest.format, supported: FORMAT_VERSION });
        }
        for file in &manifest.files {
            // Names come from a file anyone could edit: only plain names inside the archive.
            let plain = !file.name.is_empty()
                && file.name != "."
                && file.name != ".."
                && !file.name.contains(['/', '\\', '\0']);
            if !plain {
                return Err(BackupError::ManifestInvalid(format!("file name {:?} is not a plain name", file.name)));
            }
        }
        let data_file = manifest.backend.data_file();
        if !manifest.files.iter().any(|f| f.name == data_file) {
            return Err(BackupError::ManifestInvalid(format!(
                "a {} archive must list {data_file}",
                manifest.backend.as_str()
            )));
        }
        Ok(manifest)
    }

    pub fn write(&self, dir: &Path) -> Result<(), BackupError> {
        let path = dir.join(MANIFEST_FILE);
        let mut text = serde_json::to_string_pretty(self).map_err(BackupError::ManifestEncode)?;
        text.push('\n');
        std::fs::write(&path, text).map_err(|source| BackupError::Io { action: "write", path, source })
    }

    pub fn data_path(&self, dir: &Path) -> PathBuf {
        dir.join(self.backend.data_file())
    }

    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Every listed file is present, of its recorded size and SHA-256.
    pub async fn check_files(&self, dir: &Path) -> Result<(), BackupError> {
        for file in &self.files {
            let path = dir.join(&file.name);
            let actual = match std::fs::metadata(&path) {
                Ok(meta) => meta.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(BackupError::FileMissing { name: file.name.clone() });
                }
                Err(source) => return Err(BackupError::Io { action: "read", path, source }),
            };
            if actual < file.bytes {
                return Err(BackupError::Truncated { name: file.name.clone(), actual, expected: file.bytes });
            }
            if actual > file.bytes {
                return Err(BackupError::SizeMismatch { name: file.name.clone(), actual, expected: file.bytes });
            }
            let entry = FileEntry::of(&path).await?;
            if entry.sha256 != file.sha256 {
                return Err(BackupError::ChecksumMismatch {
                    name: file.name.clone(),
                    expected: file.sha256.clone(),
                    actual: entry.sha256,
                });
            }
        }
        Ok(())
    }

    /// The digests recomputed from the data equal the recorded ones, table by table.
    pub fn check_tables(&self, schema_version: i64, actual: &[TableDigest]) -> Result<(), BackupError> {
        let mismatch = |table: &str, detail: String| BackupError::Content { table: table.to_owned(), detail };
        if schema_version != self.schema_version {
            return Err(mismatch(
                "_sqlx_migrations",
                format!("the manifest says schema version {}, the data has {schema_version}", self.schema_version),
            ));
        }
        for table in &self.tables {
            let Some(found) = actual.iter().find(|d| d.name == table.name) else {
                return Err(mismatch(&table.name, "listed in the manifest but missing from the data".to_owned()));
            };
            if found.rows != table.rows {
                return Err(mismatch(
                    &table.name,
                    format!("the manifest says {} row(s), the data holds {}", table.rows, found.rows),
                ));
            }
            if found.sha256 != table.sha256 {
                return Err(mismatch(&table.name, "content hash differs from the manifest".to_owned()));
            }
        }
        if let Some(extra) = actual.iter().find(|d| !self.tables.iter().any(|t| t.name == d.name)) {
            return Err(mismatch(&extra.name, "in the data but not in the manifest".to_owned()));
        }
        Ok(())
    }
}

impl FileEntry {
    /// Size and SHA-256 of a file, read off the async runtime.
    pub async fn of(path: &Path) -> Result<Self, BackupError> {
        let owned = path.to_path_buf();
        let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
            let mut file = std::fs::File::open(&owned)?;
            let mut sha = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut bytes = 0u64;
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                sha.update(&buf[..n]);
                bytes += n as u64;
            }
            Ok((bytes, format!("{:x}", sha.finalize())))
        })
        .await
        .map_err(|e| BackupError::Io {
            action: "hash",
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        let (bytes, sha256) =
            hashed.map_err(|source| BackupError::Io { action: "read", path: path.to_path_buf(), source })?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { name, bytes, sha256 })
    }
}

impl From<TableDigest> for TableEntry {
    fn from(d: TableDigest) -> Self {
        Self { name: d.name, rows: d.rows, sha256: d.sha256 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            atom_version: "0.1.0".into(),
            backend: Backend::Sqlite,
            schema_version: 2,
            created_at: "2026-01-01T00:00:00Z".into(),
            tables: vec![TableEntry { name: "users".into(), rows: 2, sha256: "ab".into() }],
            files: vec![FileEntry { name: SQLITE_FILE.into(), bytes: 3, sha256: "cd".into() }],
        }
    }

    #[test]
    fn file_names_that_leave_the_archive_are_refused() {
        let dir = std::env::temp_dir().join(format!("atom-manifest-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut m = manifest();
        m.files.push(FileEntry { name: "../etc/passwd".into(), bytes: 1, sha256: String::new() });
        m.write(&dir).expect("write");
        let err = Manifest::read(&dir).expect_err("refused");
        assert!(err.to_string().contains("not a plain name"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_table_difference_is_named() {
        let m = manifest();
        let ok = [TableDigest { name: "users".into(), rows: 2, sha256: "ab".into() }];
        assert!(m.check_tables(2, &ok).is_ok());
        let cases: [(i64, Vec<TableDigest>, &str); 5] = [
            (3, ok.to_vec(), "schema version 2, the data has 3"),
            (2, vec![], "missing from the data"),
            (2, vec![TableDigest { name: "users".into(), rows: 1, sha256: "ab".into() }], "the data holds 1"),
            (2, vec![TableDigest { name: "users".into(), rows: 2, sha256: "00".into() }], "content hash differs"),
            (
                2,
                [ok.to_vec(), vec![TableDigest { name: "x".into(), rows: 0, sha256: String::new() }]].concat(),
                "table x",
            ),
        ];
        for (version, digests, expected) in cases {
            let err = m.check_tables(version, &digests).expect_err(expected);
            assert!(err.to_string().contains(expected), "{err} / {expected}");
        }
    }
}
