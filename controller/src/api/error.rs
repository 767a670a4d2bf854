//! The one mapping of the API's failures to gRPC: [`ApiError`] (what went wrong, as the
//! services decide it) and `impl From<ApiError> for Status` (how a client sees it). The
//! follower's redirect to the leader ([`LEADER_METADATA`]) is part of that mapping.

use crate::access::AccessError;
use crate::assign::AssignError;
use crate::store::StoreError;
use tonic::Status;

/// Response metadata key carrying the leader's gRPC address on a follower's refusal.
pub const LEADER_METADATA: &str = "ferrocast-leader";

/// Why a call failed; mapped to a [`Status`] by `From<ApiError> for Status` only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// This replica does not lead; `leader` is the leader's gRPC address when known.
    #[error("not the leader")]
    NotLeader {
        /// The leader's address, if there is a leader.
        leader: Option<String>,
    },
    /// The request is malformed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// No such node or stream, or the node's registration is over (register again).
    #[error("{0}")]
    NotFound(String),
    /// What the caller would create exists already.
    #[error("{0}")]
    Exists(String),
    /// The caller acted under a stale epoch or on a state that forbids it.
    #[error("{0}")]
    Precondition(String),
    /// The caller's role does not allow the call.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AssignError> for ApiError {
    fn from(e: AssignError) -> Self {
        match e {
            AssignError::Store(s) => ApiError::Store(s),
            e @ AssignError::StaleEpoch { .. } => ApiError::Precondition(e.to_string()),
            e @ AssignError::NoAssignment(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Store(s) => ApiError::Store(s),
            AccessError::Invalid(m) => ApiError::Invalid(m),
            AccessError::NotFound(m) => ApiError::NotFound(m),
            AccessError::Exists(m) => ApiError::Exists(m),
            e => ApiError::Precondition(e.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let msg = e.to_string();
        match e {
            ApiError::NotLeader { leader } => {
                let mut s = Status::unavailable(match &leader {
                    Some(l) => format!("not the leader; the leader is {l}"),
                    None => "not the leader; no leader elected yet".to_owned(),
                });
                if let Some(v) = leader.and_then(|l| l.parse().ok()) {
                    s.metadata_mut().insert(LEADER_METADATA, v);
                }
                s
            }
            ApiError::Invalid(_) => Status::invalid_argument(msg),
            ApiError::Forbidden(_) => Status::permission_denied(msg),
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::Exists(_) => Status::already_exists(msg),
            ApiError::Precondition(_) => Status::failed_precondition(msg),
            ApiError::Store(StoreError::Fenced) => Status::unavailable(msg),
            ApiError::Store(StoreError::LeaseExpired(_) | StoreError::UnknownNode(_)) => {
                Status::not_found(msg)
            }
            ApiError::Store(StoreError::Conflict(_)) => Status::aborted(msg),
            ApiError::Store(StoreError::Unavailable(_)) => Status::unavailable(msg),
            ApiError::Store(_) => Status::internal(msg),
        }
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// `field` must be given: an empty one is an invalid argument.
pub(crate) fn required(field: &str, value: &str) -> ApiResult<()> {
    if value.is_empty() {
        return Err(ApiError::Invalid(format!("{field} is required")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_status_codes() {
        let s = Status::from(ApiError::NotLeader {
            leader: Some("10.0.0.2:50051".into()),
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.metadata().get(LEADER_METADATA).unwrap(), "10.0.0.2:50051");
        let stale = AssignError::StaleEpoch {
            stream: "s".into(),
            epoch: 1,
            current: 2,
        };
        assert_eq!(
            Status::from(ApiError::from(stale)).code(),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            Status::from(ApiError::Store(StoreError::LeaseExpired(1))).code(),
            tonic::Code::NotFound
        );
        assert_eq!(
            Status::from(ApiError::Store(StoreError::Fenced)).code(),
            tonic::Code::Unavailable
        );
    }
}
