//! How each failure below the HTTP layer becomes a status and Bridge's error type.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;

use crate::files::FilesError;
use crate::index::IndexError;
use crate::pipeline::PipelineError;
use crate::scan::ScanError;
use crate::sniff::TypeError;
use crate::store::StoreError;

use super::{ApiError, known_kind};

impl From<TypeError> for ApiError {
    fn from(e: TypeError) -> Self {
        match e {
            TypeError::Invalid(_) => Self::bad_request(format!("{e}.")),
            TypeError::NotAllowed(_) | TypeError::Contradicts { .. } => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaTypeException",
                format!("Unsupported media type: {e}."),
            ),
        }
    }
}

/// Buffer memory stayed spent for as long as an upload may wait.
fn memory_busy() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailableException",
        "The service is busy with other uploads. Try again shortly.",
    );
    e.retry_after = Some(crate::limits::BUSY_RETRY_AFTER.as_secs());
    e
}

fn store_error(e: &StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::not_found(),
        StoreError::Busy(_) => memory_busy(),
        StoreError::RangeNotSatisfiable => ApiError::range_not_satisfiable(),
        StoreError::Unreadable => ApiError::unreadable(),
        // An upload URL's object was sent again while it was checked: the next try checks
        // the new one.
        StoreError::Changed => {
            ApiError::unavailable("file store (the upload changed while it was checked)")
        }
        StoreError::Io { backend, .. } | StoreError::Backend { backend, .. } => {
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "store failed");
            let mut api = ApiError::unavailable(&format!("{backend} file store"));
            api.backend = Some(backend);
            api
        }
    }
}

fn index_error(e: &IndexError) -> ApiError {
    match e {
        IndexError::Conflict => ApiError::new(
            StatusCode::CONFLICT,
            "ConcurrentModificationException",
            "The file was changed by another request. Try again.",
        ),
        IndexError::Backend { backend, .. } => {
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "index failed");
            let mut api = ApiError::unavailable(&format!("{backend} file index"));
            api.backend = Some(backend);
            api
        }
    }
}

fn scan_error(e: &ScanError) -> ApiError {
    // The cause (a refused or reset connection, say) is what an operator needs to act on.
    let cause = std::error::Error::source(e).map(ToString::to_string);
    tracing::error!(error = %e, cause, "scanner failed");
    let mut api = ApiError::unavailable("virus scanner");
    api.backend = Some("clamd");
    api
}

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::TooLarge { limit } => Self::too_large(limit),
            PipelineError::Type(t) => t.into(),
            PipelineError::SizeMismatch { .. } | PipelineError::ChecksumMismatch => {
                Self::bad_request(format!("{}.", capitalise(&e.to_string())))
            }
            PipelineError::Body(_) => Self::bad_request("The request body could not be read."),
            PipelineError::ClientTooSlow => Self::new(
                StatusCode::REQUEST_TIMEOUT,
                "BadRequestException",
                "The request body stopped arriving; the upload was given up.",
            ),
            PipelineError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "The service is shutting down; the upload was not stored. Try again.",
            ),
            PipelineError::Infected(signature) => {
                let mut e = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "InfectedFileException",
                    format!("The file is infected ({signature}) and was not stored."),
                );
                e.signature = Some(signature);
                e
            }
            PipelineError::Scan(s) => scan_error(&s),
            PipelineError::Store(s) => store_error(&s),
            PipelineError::Busy(_) => memory_busy(),
        }
    }
}

impl From<FilesError> for ApiError {
    fn from(e: FilesError) -> Self {
        match e {
            FilesError::NotFound => Self::not_found(),
            FilesError::Capability(_) => Self::forbidden(
                "This URL is not valid: it has expired, was altered, or is for another use.",
            ),
            FilesError::UploadConsumed => {
                Self::forbidden("This upload URL was already used or replaced by a newer one.")
            }
            FilesError::ContentTypeMismatch => {
                Self::forbidden("The Content-Type is not the one this upload URL was issued for.")
            }
            FilesError::TooLarge { limit } => Self::too_large(limit),
            FilesError::Type(t) => t.into(),
            FilesError::Pipeline(p) => p.into(),
            FilesError::Index(i) => index_error(&i),
            FilesError::Store(s) => store_error(&s),
            FilesError::Contended | FilesError::LeaseLost => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "Too many requests are changing this file at once. Try again.",
                );
                e.retry_after = Some(1);
                e
            }
            FilesError::ClaimRevoked => Self::new(
                StatusCode::CONFLICT,
                "ConcurrentModificationException",
                "The upload was stopped before it was stored: the participant's files were \
                 erased, or the upload was left unfinished for too long.",
            ),
            FilesError::TooManyPending => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Too many upload URLs of this participant are unused. Use or delete them first.",
            ),
            FilesError::Busy => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailableException",
                    "Too many uploads are in progress. Try again shortly.",
                );
                e.retry_after = Some(crate::limits::BUSY_RETRY_AFTER.as_secs());
                e
            }
            FilesError::Quota(what) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "EntityTooLargeException",
                format!("This upload would exceed the participant's {what} quota."),
            ),
            FilesError::Infected(signature) => {
                let mut e = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "InfectedFileException",
                    format!(
                        "A later scan found this file infected ({signature}); it is no longer \
                         served."
                    ),
                );
                e.signature = Some(signature);
                e
            }
            FilesError::NotWithEncryption(what) => Self::not_implemented(format!(
                "{what} are not available on this deployment: it encrypts files \
                 (PF_ENCRYPTION), and they do not yet; upload in one request instead."
            )),
            FilesError::TooManyUploads => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "The participant has too many open resumable uploads; finish or terminate one.",
            ),
            FilesError::TooManyAppUploads => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "The app has too many open resumable uploads; try again later.",
            ),
            FilesError::UploadExpired => Self::new(
                StatusCode::GONE,
                "EntityGoneException",
                "The upload expired; start a new one.",
            ),
            FilesError::OffsetMismatch(offset) => Self::new(
                StatusCode::CONFLICT,
                "ConcurrentModificationException",
                format!("The upload's offset is {offset}; send the bytes from there."),
            ),
            FilesError::LengthFixed => Self::bad_request(
                "Upload-Length is set already (or smaller than the offset) and cannot change.",
            ),
            FilesError::DigestFixed => Self::bad_request(
                "The SHA-256 this request declares is not the one the upload declared; none of its bytes were kept.",
            ),
            FilesError::PastLength => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "EntityTooLargeException",
                "The request carries bytes past the upload's length; none of them were kept.",
            ),
            FilesError::UploadChecksum => Self::new(
                StatusCode::from_u16(460).expect("460 is a status code"),
                "ChecksumMismatchException",
                "The request body does not match its Upload-Checksum; none of it was kept.",
            ),
            FilesError::UploadLocked => {
                let mut e = Self::new(
                    StatusCode::LOCKED,
                    "ConcurrentModificationException",
                    "Another request is appending to this upload. Try again shortly.",
                );
                e.retry_after = Some(1);
                e
            }
            FilesError::UploadCompleting => {
                let mut e = Self::new(
                    StatusCode::LOCKED,
                    "ConcurrentModificationException",
                    "Every byte of this upload is in and it is being checked and stored. Ask \
                     again shortly for the outcome.",
                );
                e.retry_after = Some(1);
                e
            }
            FilesError::UploadCompleted => Self::new(
                StatusCode::CONFLICT,
                "ConcurrentModificationException",
                "This upload is complete and its file is kept; delete the file to remove it.",
            ),
            FilesError::UploadStopped => Self::new(
                StatusCode::CONFLICT,
                "ConcurrentModificationException",
                "A newer request for this upload stopped this one; what arrived before is kept.",
            ),
            FilesError::UploadCut => Self::bad_request(
                "The request body ended early or too slowly; what arrived is kept.",
            ),
            FilesError::UploadRefused(r) => {
                let mut e = Self::new(
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
                    known_kind(&r.kind),
                    r.message,
                );
                e.signature = r.signature;
                e
            }
            FilesError::DownloadBudget(wait) => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "TooManyRequestsException",
                    "The participant's download budget for this hour is spent. Try again later.",
                );
                e.retry_after = Some(wait.as_secs().max(1));
                e
            }
        }
    }
}

/// For handlers that also carry a detail for the response (such as an object's size).
impl<T> From<FilesError> for (ApiError, Option<T>) {
    fn from(e: FilesError) -> Self {
        (e.into(), None)
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        Self::bad_request("The path is not valid.")
    }
}

impl From<QueryRejection> for ApiError {
    fn from(_: QueryRejection) -> Self {
        Self::bad_request("The query string is not valid.")
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}
