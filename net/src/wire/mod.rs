//! Writing responses to the wire.
//!
//! * [`fetch`]: a Fetch response encoded as a list of [`Piece`]s (envelope bytes in memory,
//!   records as the engine's slices), so record bytes are never copied into a buffer.
//! * [`send`]: writes such pieces to a socket: memory pieces with vectored writes, file
//!   pieces with io_uring SPLICE through a per-connection [`SplicePipe`].

pub mod fetch;
pub mod send;

pub use fetch::{
    encode_fetch_response, pieces_len, FetchEncodeError, FetchPartitionParts, FetchResponseParts,
    FetchTopicParts, NodeEndpointParts, Piece, FETCH_VERSIONS,
};
pub use send::{send_pieces, SplicePipe};
