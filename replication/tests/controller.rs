//! The controller node: requests answered after commit, NOT_CONTROLLER, non-voters,
//! garbage frames, restart from the persisted log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]

use tern_replication::controller::*;
use tern_replication::decide::{ControllerError, CreateTopicRequest, RegisterBrokerRequest};
use tern_replication::quorum::{LogState, MemQuorumLog};

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

/// One node with its log; `pump` persists and syncs everything.
struct One {
    c: Controller,
    log: MemQuorumLog,
    now: u64,
}

impl One {
    fn new(voters: Vec<i32>) -> Self {
        let c = Controller::new(
            ControllerConfig::new(0, voters, 1),
            LogState::default(),
            &logger(),
        )
        .unwrap();
        One {
            c,
            log: MemQuorumLog::default(),
            now: 0,
        }
    }

    fn pump(&mut self) {
        while let Some(b) = self.c.poll_persist() {
            self.log.write(&b).unwrap();
            self.log.sync().unwrap();
            self.c.handle_persisted(b.id, self.now);
        }
    }

    fn run_ms(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 10;
            self.c.handle_tick(self.now);
            self.pump();
        }
    }
}

fn register(id: i32) -> BrokerRequest {
    BrokerRequest::RegisterBroker(RegisterBrokerRequest {
        broker_id: id,
        incarnation_id: [1; 16],
        endpoints: vec![],
        rack: None,
        previous_broker_epoch: None,
    })
}

/// A single-voter controller elects itself, answers after commit, survives a restart.
#[test]
fn single_node_commits_and_recovers() {
    let mut one = One::new(vec![0]);
    one.run_ms(3000);
    assert!(one.c.is_leader());
    one.c.handle_request(1, register(5), one.now);
    assert!(one.c.poll_reply().is_none(), "answered before commit");
    one.pump();
    let (id, reply) = one.c.poll_reply().unwrap();
    assert_eq!(id, 1);
    let Ok(BrokerResponse::RegisterBroker(r)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(one.c.image().broker(5).unwrap().epoch, r.broker_epoch);
    let recovered = one.log.recover().unwrap();
    let again =
        Controller::new(ControllerConfig::new(0, vec![0], 1), recovered, &logger()).unwrap();
    assert_eq!(again.image(), one.c.image());
}

/// DescribeQuorum: the leader answers its term, commit index and voters; a node that is
/// not the leader answers NOT_CONTROLLER.
#[test]
fn describe_quorum() {
    let mut one = One::new(vec![0]);
    one.c.handle_request(1, BrokerRequest::DescribeQuorum, 0);
    let (_, reply) = one.c.poll_reply().unwrap();
    assert!(matches!(reply, Err(ControllerError::NotController { .. })));
    one.run_ms(3000);
    one.c.handle_request(2, register(5), one.now);
    one.pump();
    let _ = one.c.poll_reply().unwrap();
    one.c
        .handle_request(3, BrokerRequest::DescribeQuorum, one.now);
    let (id, reply) = one.c.poll_reply().unwrap();
    assert_eq!(id, 3);
    let Ok(BrokerResponse::Quorum(q)) = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(q.leader_id, 0);
    assert!(q.term >= 1);
    assert!(q.committed_index >= 2, "{q:?}");
    assert_eq!(q.voters.len(), 1);
    assert_eq!(q.voters[0].id, 0);
    assert_eq!(q.voters[0].matched_index, q.committed_index);
    assert_eq!(q.voters[0].last_heard_ms, Some(one.now));
}

/// A follower answers NOT_CONTROLLER; non-voters and garbage frames are refused.
#[test]
fn refusals() {
    let mut one = One::new(vec![0, 1, 2]);
    one.c.handle_request(
        7,
        BrokerRequest::CreateTopics(vec![CreateTopicRequest {
            name: "t".into(),
            num_partitions: 1,
            replication_factor: 1,
            configs: Default::default(),
        }]),
        0,
    );
    let (id, reply) = one.c.poll_reply().unwrap();
    assert_eq!(id, 7);
    let err = reply.unwrap_err();
    assert!(matches!(err, ControllerError::NotController { .. }));
    assert_eq!(err.kafka_code(), 41);
    assert!(matches!(
        one.c.handle_raft_message(9, b"whatever", 0),
        Err(InboundError::NotVoter { from: 9 })
    ));
    assert!(matches!(
        one.c.handle_raft_message(1, b"garbage bytes here", 0),
        Err(InboundError::Decode { from: 1, .. })
    ));
    // A frame whose Raft sender is not the authenticated peer.
    let mut m = raft::eraftpb::Message::default();
    m.from = 3;
    m.to = 1;
    let bytes = tern_replication::codec::Frame::Raft(m).to_bytes().unwrap();
    assert!(matches!(
        one.c.handle_raft_message(1, &bytes, 0),
        Err(InboundError::Misaddressed { .. })
    ));
}

/// A broker that stops heartbeating is fenced after the session timeout, not before.
#[test]
fn session_expiry_fences() {
    let mut one = One::new(vec![0]);
    one.run_ms(3000);
    one.c.handle_request(1, register(5), one.now);
    one.pump();
    let Some((_, Ok(BrokerResponse::RegisterBroker(r)))) = one.c.poll_reply() else {
        panic!()
    };
    let hb = |epoch| {
        BrokerRequest::BrokerHeartbeat(tern_replication::decide::HeartbeatRequest {
            broker_id: 5,
            broker_epoch: epoch,
            current_metadata_offset: epoch,
            want_fence: false,
            want_shutdown: false,
        })
    };
    one.c.handle_request(2, hb(r.broker_epoch), one.now);
    one.pump();
    assert!(!one.c.image().broker(5).unwrap().fenced);
    let stopped = one.now;
    while !one.c.image().broker(5).unwrap().fenced {
        one.run_ms(10);
        assert!(one.now < stopped + 9000 + 1000, "not fenced in time");
    }
    assert!(one.now >= stopped + 9000, "fenced early");
}
