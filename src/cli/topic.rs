//! `tern topic …`: create, list, describe, alter and delete topics on any Kafka-compatible
//! broker, with CreateTopics, Metadata, DescribeConfigs, CreatePartitions,
//! IncrementalAlterConfigs and DeleteTopics.
//!
//! Results go to stdout (a list is one name per line, for scripts); a refusal by the broker
//! becomes one error line naming the Kafka error and the broker's message.

use anyhow::bail;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_configs_response::DescribeConfigsResourceResult;
use kafka_protocol::messages::{
    ApiKey, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::kafka::{
    call, error_text, plural, request, table, topic_name, version, BootstrapArgs, Cluster,
    TopicInfo,
};

/// The read-only DescribeConfigs entry in which Tern lists the shard serving each partition
/// (`partition:shard,…`); other brokers don't send it.
const SHARDS_CONFIG: &str = "tern.partition.shards";

/// DescribeConfigs resource type of a topic.
const RESOURCE_TOPIC: i8 = 2;

/// Options of `tern topic`.
#[derive(Debug, clap::Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    command: TopicCommand,
    #[command(flatten)]
    conn: BootstrapArgs,
}

#[derive(Debug, clap::Subcommand)]
enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name: ASCII letters, digits, '.', '_' and '-', at most 249 characters.
        name: String,
        /// Number of partitions (default: the broker's num.partitions).
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition (default: the broker's default.replication.factor).
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic configuration, KEY=VALUE (e.g. retention.ms=3600000); repeat as needed.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Only ask the broker whether the topic could be created; create nothing.
        #[arg(long)]
        validate_only: bool,
    },
    /// List the topics, one name per line.
    List {
        /// Also list internal topics (__consumer_offsets, …).
        #[arg(long)]
        internal: bool,
    },
    /// Show a topic's partitions (leader, replicas, in-sync replicas) and configuration.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Change a topic: raise its partition count (partitions cannot be removed), set or
    /// remove its configuration overrides (applied at once, kept across restarts).
    Alter {
        /// Topic name.
        name: String,
        /// The new, larger number of partitions.
        #[arg(long)]
        partitions: Option<i32>,
        /// Set a topic configuration, KEY=VALUE (e.g. retention.ms=3600000); repeat as needed.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        /// Remove the topic's own value of KEY: the broker's default applies again.
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
    },
}

/// Runs `tern topic …`.
pub fn run(args: TopicArgs) -> anyhow::Result<()> {
    match args.command {
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
            validate_only,
        } => {
            let configs = parse_configs(&configs)?;
            let mut cluster = Cluster::connect(&args.conn)?;
            let spec = CreateSpec {
                name: &name,
                partitions,
                replication_factor,
                configs,
                validate_only,
            };
            create(&mut cluster, &spec)
        }
        TopicCommand::List { internal } => list(&mut Cluster::connect(&args.conn)?, internal),
        TopicCommand::Describe { name } => describe(&mut Cluster::connect(&args.conn)?, &name),
        TopicCommand::Delete { name } => delete(&mut Cluster::connect(&args.conn)?, &name),
        TopicCommand::Alter {
            name,
            partitions,
            configs,
            delete_configs,
        } => {
            let configs = parse_configs(&configs)?;
            if partitions.is_none() && configs.is_empty() && delete_configs.is_empty() {
                bail!("nothing to change: give --partitions, --config KEY=VALUE or --delete-config KEY");
            }
            let mut cluster = Cluster::connect(&args.conn)?;
            if !configs.is_empty() || !delete_configs.is_empty() {
                alter_configs(&mut cluster, &name, &configs, &delete_configs)?;
            }
            match partitions {
                Some(p) => alter(&mut cluster, &name, p),
                None => Ok(()),
            }
        }
    }
}

/// `KEY=VALUE` options as pairs.
fn parse_configs(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => bail!("--config {kv:?}: expected KEY=VALUE"),
        })
        .collect()
}

#[derive(Debug)]
struct CreateSpec<'a> {
    name: &'a str,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
    configs: Vec<(String, String)>,
    validate_only: bool,
}

fn create(cluster: &mut Cluster, spec: &CreateSpec<'_>) -> anyhow::Result<()> {
    let name = spec.name;
    let client = cluster.controller();
    let v = version(client, ApiKey::CreateTopics, 2, 7)?;
    // Before v4 the broker has no defaults to apply (-1); one partition, one replica then.
    let unset = if v >= 4 { -1 } else { 1 };
    let configs = tern_net::client::topic_configs(spec.configs.iter().map(|(k, v)| (k, v)));
    let topic = CreatableTopic::default()
        .with_name(topic_name(name))
        .with_num_partitions(spec.partitions.unwrap_or(unset))
        .with_replication_factor(spec.replication_factor.unwrap_or(unset as i16))
        .with_configs(configs);
    let req = CreateTopicsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(super::kafka::BROKER_TIMEOUT_MS)
        .with_validate_only(spec.validate_only);
    let resp: CreateTopicsResponse = request(client, ApiKey::CreateTopics, v, &req)?;
    let Some(r) = resp.topics.iter().find(|t| t.name.as_str() == name) else {
        bail!("the broker's CreateTopics response has no result for topic {name:?}");
    };
    match ResponseError::try_from_code(r.error_code) {
        None => {}
        Some(ResponseError::TopicAlreadyExists) => bail!("topic {name:?} already exists"),
        Some(_) => bail!(
            "cannot create topic {name:?}: {}",
            error_text(r.error_code, r.error_message.as_ref())
        ),
    }
    // From v5 the broker says what it chose; before, only what was asked is known.
    let (partitions, rf) = if v >= 5 && r.num_partitions > 0 {
        (Some(r.num_partitions), Some(r.replication_factor))
    } else {
        (spec.partitions, spec.replication_factor)
    };
    let partitions = partitions.map_or("the default number of partitions".into(), |p| {
        plural(p.max(0) as u64, "partition")
    });
    let rf = rf.map_or("the default".into(), |r| r.to_string());
    if spec.validate_only {
        println!(
            "topic {name:?} can be created ({partitions}, replication factor {rf}); \
             --validate-only: nothing was created"
        );
    } else {
        println!("created topic {name:?} ({partitions}, replication factor {rf})");
    }
    Ok(())
}

fn list(cluster: &mut Cluster, internal: bool) -> anyhow::Result<()> {
    let resp = cluster.metadata(None, false)?;
    let mut names: Vec<String> = resp
        .topics
        .iter()
        .filter(|t| internal || !(t.is_internal || t.name.as_ref().is_some_and(is_internal_name)))
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect();
    names.sort();
    for n in names {
        println!("{n}");
    }
    Ok(())
}

/// Names that Kafka reserves for its own topics, in case a broker does not flag them.
fn is_internal_name(name: &kafka_protocol::messages::TopicName) -> bool {
    matches!(name.as_str(), "__consumer_offsets" | "__transaction_state")
}

fn describe(cluster: &mut Cluster, name: &str) -> anyhow::Result<()> {
    let info = cluster.topic(name, false)?;
    let configs = describe_configs(cluster, name)?;
    let shards = configs
        .iter()
        .find(|c| c.name.as_str() == SHARDS_CONFIG)
        .and_then(|c| c.value.as_ref())
        .map(|v| parse_shards(v.as_str()));
    print!("{}", partitions_text(&info, shards.as_ref()));
    let mut rows = vec![vec!["CONFIG".into(), "VALUE".into(), "SOURCE".into()]];
    for c in configs.iter().filter(|c| c.name.as_str() != SHARDS_CONFIG) {
        let value = match &c.value {
            Some(v) => v.to_string(),
            None if c.is_sensitive => "(sensitive)".into(),
            None => "(none)".into(),
        };
        rows.push(vec![
            c.name.to_string(),
            value,
            source_name(c.config_source).into(),
        ]);
    }
    if rows.len() > 1 {
        println!();
        print!("{}", table(&rows));
    }
    Ok(())
}

/// The topic's configuration entries; empty when the broker does not offer DescribeConfigs.
fn describe_configs(
    cluster: &mut Cluster,
    name: &str,
) -> anyhow::Result<Vec<DescribeConfigsResourceResult>> {
    let client = cluster.bootstrap();
    if client.version(ApiKey::DescribeConfigs, 1, 4).is_err() {
        eprintln!("note: {} does not offer DescribeConfigs", client.addr());
        return Ok(Vec::new());
    }
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configuration_keys(None)]);
    let resp: DescribeConfigsResponse = call(client, ApiKey::DescribeConfigs, 1, 4, &req)?;
    let Some(r) = resp.results.into_iter().next() else {
        bail!("the broker's DescribeConfigs response has no result for topic {name:?}");
    };
    match ResponseError::try_from_code(r.error_code) {
        None => Ok(r.configs),
        Some(ResponseError::UnknownTopicOrPartition) => bail!("topic {name:?} does not exist"),
        Some(_) => bail!(
            "cannot read the configuration of topic {name:?}: {}",
            error_text(r.error_code, r.error_message.as_ref())
        ),
    }
}

/// Where a configuration value comes from (DescribeConfigs `config_source`).
fn source_name(source: i8) -> &'static str {
    match source {
        1 => "override",
        2 | 3 => "broker (dynamic)",
        4 => "broker",
        5 => "default",
        _ => "other",
    }
}

/// `"0:1,1:0"` → `[(0, 1), (1, 0)]`; malformed pieces are skipped.
fn parse_shards(value: &str) -> Vec<(i32, String)> {
    value
        .split(',')
        .filter_map(|piece| {
            let (p, s) = piece.split_once(':')?;
            Some((p.trim().parse().ok()?, s.trim().to_string()))
        })
        .collect()
}

fn partitions_text(info: &TopicInfo, shards: Option<&Vec<(i32, String)>>) -> String {
    let ids = |v: &[i32]| {
        let s: Vec<String> = v.iter().map(i32::to_string).collect();
        s.join(",")
    };
    let rf = info.partitions.first().map_or(0, |p| p.replicas.len());
    let mut out = format!(
        "topic: {}  partitions: {}  replication factor: {}",
        info.name,
        info.partitions.len(),
        rf
    );
    if let Some(id) = &info.id {
        out.push_str(&format!("  id: {id}"));
    }
    if info.internal {
        out.push_str("  (internal)");
    }
    out.push('\n');
    let mut head: Vec<String> = ["PARTITION", "LEADER", "REPLICAS", "ISR"]
        .map(String::from)
        .to_vec();
    if shards.is_some() {
        head.push("SHARD".into());
    }
    let mut rows = vec![head];
    for p in &info.partitions {
        let leader = if p.leader < 0 {
            "none".to_string()
        } else {
            p.leader.to_string()
        };
        let mut row = vec![p.index.to_string(), leader, ids(&p.replicas), ids(&p.isr)];
        if let Some(shards) = shards {
            let shard = shards.iter().find(|(i, _)| *i == p.index);
            row.push(shard.map_or_else(|| "-".to_string(), |(_, s)| s.clone()));
        }
        if p.error_code != 0 {
            row.push(error_text(p.error_code, None));
        }
        rows.push(row);
    }
    out.push_str(&table(&rows));
    out
}

fn delete(cluster: &mut Cluster, name: &str) -> anyhow::Result<()> {
    let client = cluster.controller();
    let v = version(client, ApiKey::DeleteTopics, 1, 6)?;
    let mut req = DeleteTopicsRequest::default().with_timeout_ms(super::kafka::BROKER_TIMEOUT_MS);
    if v >= 6 {
        req.topics = vec![DeleteTopicState::default().with_name(Some(topic_name(name)))];
    } else {
        req.topic_names = vec![topic_name(name)];
    }
    let resp: DeleteTopicsResponse = request(client, ApiKey::DeleteTopics, v, &req)?;
    let Some(r) = resp
        .responses
        .iter()
        .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == name))
    else {
        bail!("the broker's DeleteTopics response has no result for topic {name:?}");
    };
    match ResponseError::try_from_code(r.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => bail!("topic {name:?} does not exist"),
        Some(_) => bail!(
            "cannot delete topic {name:?}: {}",
            error_text(r.error_code, r.error_message.as_ref())
        ),
    }
    println!("deleted topic {name:?}");
    Ok(())
}

/// IncrementalAlterConfigs on the topic: SET each pair, DELETE each key.
fn alter_configs(
    cluster: &mut Cluster,
    name: &str,
    set: &[(String, String)],
    delete: &[String],
) -> anyhow::Result<()> {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let configs = set
        .iter()
        .map(|(k, v)| (k, SET, Some(StrBytes::from_string(v.clone()))))
        .chain(delete.iter().map(|k| (k, DELETE, None)))
        .map(|(k, op, v)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(k.clone()))
                .with_config_operation(op)
                .with_value(v)
        })
        .collect();
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(StrBytes::from_string(name.to_string()))
            .with_configs(configs),
    ]);
    let client = cluster.controller();
    let resp: IncrementalAlterConfigsResponse =
        call(client, ApiKey::IncrementalAlterConfigs, 0, 1, &req)?;
    let Some(r) = resp.responses.first() else {
        bail!("the broker's IncrementalAlterConfigs response has no result for topic {name:?}");
    };
    match ResponseError::try_from_code(r.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => bail!("topic {name:?} does not exist"),
        Some(_) => bail!(
            "cannot change the configuration of topic {name:?}: {}",
            error_text(r.error_code, r.error_message.as_ref())
        ),
    }
    for (k, v) in set {
        println!("topic {name:?}: {k} = {v}");
    }
    for k in delete {
        println!("topic {name:?}: {k} back to the broker's default");
    }
    Ok(())
}

fn alter(cluster: &mut Cluster, name: &str, partitions: i32) -> anyhow::Result<()> {
    let client = cluster.controller();
    let req = CreatePartitionsRequest::default()
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(topic_name(name))
            .with_count(partitions)
            .with_assignments(None)])
        .with_timeout_ms(super::kafka::BROKER_TIMEOUT_MS);
    let resp: CreatePartitionsResponse = call(client, ApiKey::CreatePartitions, 0, 3, &req)?;
    let Some(r) = resp.results.iter().find(|r| r.name.as_str() == name) else {
        bail!("the broker's CreatePartitions response has no result for topic {name:?}");
    };
    match ResponseError::try_from_code(r.error_code) {
        None => {}
        Some(ResponseError::UnknownTopicOrPartition) => bail!("topic {name:?} does not exist"),
        Some(_) => bail!(
            "cannot change the partitions of topic {name:?}: {}",
            error_text(r.error_code, r.error_message.as_ref())
        ),
    }
    println!(
        "topic {name:?} now has {}",
        plural(partitions.max(0) as u64, "partition")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the parsing of `--config` options and of Tern's shard listing.
    #[test]
    fn options_and_shards() {
        let ok = parse_configs(&["retention.ms=10".into(), "a=b=c".into()]).unwrap();
        assert_eq!(ok[1], ("a".to_string(), "b=c".to_string()));
        let err = parse_configs(&["retention.ms".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--config \"retention.ms\": expected KEY=VALUE"
        );
        assert!(parse_configs(&["=1".into()]).is_err());
        assert_eq!(
            parse_shards("0:1,1:0,bad"),
            vec![(0, "1".to_string()), (1, "0".to_string())]
        );
    }
}
