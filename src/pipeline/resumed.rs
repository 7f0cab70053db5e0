//! A resumable upload's bytes, stored and counted by its requests, held to the same rules as
//! a body the pipeline reads itself.

use bytes::Bytes;

use super::{Declared, PipelineError, Received, Rules, check_whole};
use crate::budget::Reservation;
use crate::scan::ScanSession;
use crate::sniff;

/// What the requests of a resumable upload left behind, once every byte is stored: the
/// first bytes (for the type), the size and SHA-256 they counted, and the scan session that
/// was fed every byte, if one was.
pub struct Resumed {
    pub head: Bytes,
    pub size: u64,
    pub sha256: String,
    pub scan: Option<Box<dyn ScanSession>>,
    /// What the scan session holds from the buffer budget.
    pub memory: Reservation,
}

/// Holds a resumable upload's bytes, already stored and counted by its requests, to the same
/// rules as a body read here; [`Received::finish`] then waits only for the verdict.
pub fn resume(
    resumed: Resumed,
    declared: &Declared,
    rules: &Rules,
) -> Result<Received, PipelineError> {
    if resumed.size > rules.max_size {
        return Err(PipelineError::TooLarge {
            limit: rules.max_size,
        });
    }
    let mime_type = sniff::decide(
        declared.mime_type.as_deref(),
        sniff::detect(&resumed.head),
        &rules.allowed,
    )?;
    check_whole(declared, resumed.size, &resumed.sha256)?;
    Ok(Received {
        writer: None,
        scan: resumed.scan,
        mime_type,
        size: resumed.size,
        sha256: resumed.sha256,
        file_name: declared.file_name.clone(),
        _memory: resumed.memory,
    })
}
