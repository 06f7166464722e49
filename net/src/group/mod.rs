//! Consumer groups: the classic group protocol and committed offsets.
//!
//! * [`coordinator`] is the group coordinator as an IO-free state machine: `handle_*`
//!   inputs carry `now`, replies and the next timer are polled.
//! * [`driver`] runs a coordinator on each shard: requests in, replies out, commits made
//!   durable before they are applied, startup replay, offset expiry, cleaning.
//! * [`handlers`] decodes the Kafka group APIs and routes each group to its shard.
//! * [`store`] is how committed offsets are persisted as records of `__consumer_offsets`
//!   and replayed when the broker starts.
//!
//! Groups are spread over shards by the `__consumer_offsets` partition that owns them;
//! every shard drives one [`coordinator::Coordinator`] for the groups of its partitions.

pub mod coordinator;
pub mod driver;
pub mod handlers;
pub mod store;
