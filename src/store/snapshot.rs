//! The SQL of the analysis snapshot: one row, replaced at each write, read at start.
//! What the bytes mean is `engine::snapshot`'s business; the store keeps them with
//! the data time they cover.

use super::StoreError;
use super::sql::{Row, Sql, SqlExt};

/// A stored snapshot's description, without its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotMeta {
    /// Format version of the encoding.
    pub format_version: u32,
    /// Data time the snapshot covers, ms.
    pub watermark_ms: i64,
    /// Clock time it was written, ms.
    pub written_ms: i64,
    /// How long encoding and storing it took, ms. The stored row holds the encoding
    /// time only: its own insert cannot be timed inside it.
    pub write_ms: i64,
    /// Size of the encoding in bytes.
    pub bytes: u64,
}

/// Replace the stored snapshot with `bytes` (inside the caller's transaction, so it
/// commits with that step's alert writes). It covers every decision stored so far:
/// the mark of decisions stored past a snapshot (`write_decided`) is cleared.
pub fn write(
    db: &(impl Sql + ?Sized),
    meta: &SnapshotMeta,
    bytes: &[u8],
) -> Result<(), StoreError> {
    db.execute("DELETE FROM analysis_decided", &[])?;
    db.execute(
        "INSERT INTO analysis_snapshot
           (id, format_version, watermark_ms, created_ms, encode_ms, size, bytes)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET format_version = excluded.format_version,
           watermark_ms = excluded.watermark_ms, created_ms = excluded.created_ms,
           encode_ms = excluded.encode_ms, size = excluded.size, bytes = excluded.bytes",
        &[
            meta.format_version.into(),
            meta.watermark_ms.into(),
            meta.written_ms.into(),
            meta.write_ms.into(),
            (bytes.len() as i64).into(),
            bytes.into(),
        ],
    )?;
    Ok(())
}

/// The stored snapshot, if any: its description and its bytes.
pub fn read(db: &(impl Sql + ?Sized)) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StoreError> {
    db.row(
        "SELECT format_version, watermark_ms, created_ms, encode_ms, size, bytes
         FROM analysis_snapshot WHERE id = 1",
        &[],
        |r: &dyn Row| {
            Ok((
                SnapshotMeta {
                    format_version: u32::try_from(r.int(0)?).unwrap_or(u32::MAX),
                    watermark_ms: r.int(1)?,
                    written_ms: r.int(2)?,
                    write_ms: r.int(3)?,
                    bytes: r.int(4)? as u64,
                },
                r.blob(5)?,
            ))
        },
    )
}

/// Record that alert decisions up to data time `watermark_ms` are stored that the
/// stored snapshot does not cover (inside the transaction of those decisions).
pub fn write_decided(db: &(impl Sql + ?Sized), watermark_ms: i64) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO analysis_decided (id, watermark_ms) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET watermark_ms = excluded.watermark_ms",
        &[watermark_ms.into()],
    )?;
    Ok(())
}

/// The data time up to which alert decisions are stored past the snapshot, if any
/// were.
pub fn read_decided(db: &(impl Sql + ?Sized)) -> Result<Option<i64>, StoreError> {
    db.row(
        "SELECT watermark_ms FROM analysis_decided WHERE id = 1",
        &[],
        |r: &dyn Row| r.int(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_snapshot_is_replaced_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(crate::store::Store::open(&path).unwrap());
        let conn = crate::store::open_reader(&path).unwrap();
        assert_eq!(read(&conn).unwrap(), None);
        let conn = Connection::open(&path).unwrap();
        let mut meta = SnapshotMeta {
            format_version: 1,
            watermark_ms: 600_000,
            written_ms: 5,
            write_ms: 2,
            bytes: 3,
        };
        write(&conn, &meta, b"abc").unwrap();
        meta.watermark_ms = 1_200_000;
        meta.bytes = 2;
        write(&conn, &meta, b"de").unwrap();
        assert_eq!(read(&conn).unwrap(), Some((meta, b"de".to_vec())));
    }
}
