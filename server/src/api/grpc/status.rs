//! Room-layer errors as gRPC statuses, with their message.

use tonic::Status;

use crate::room::RoomError;

pub fn from_room_error(e: RoomError) -> Status {
    let message = e.to_string();
    match e {
        RoomError::RoomNotFound(_)
        | RoomError::RoomClosed(_)
        | RoomError::ParticipantNotFound
        | RoomError::IdentityNotFound(_)
        | RoomError::TrackNotFound(_) => Status::not_found(message),
        RoomError::RoomFull(..) => Status::resource_exhausted(message),
        RoomError::NotAllowed(_) => Status::failed_precondition(message),
        RoomError::InvalidArgument(_) => Status::invalid_argument(message),
        RoomError::Transport(_) | RoomError::Draining => Status::unavailable(message),
    }
}

/// An empty required string field.
pub fn require(field: &str, value: &str) -> Result<(), Status> {
    if value.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}
