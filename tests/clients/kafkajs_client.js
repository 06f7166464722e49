// The client-matrix scenario with kafkajs (pure JavaScript).
//
//   NODE_PATH=target/clients/node_modules node kafkajs_client.js HOST:PORT
//
// Prints one `STEP <name> ok|FAIL <reason>` line per step (see README.md). kafkajs has
// AlterConfigs only (no IncrementalAlterConfigs). Diagnostics go to stderr.
'use strict'

const { Kafka, logLevel, ConfigResourceTypes, Partitioners } = require('kafkajs')

const bootstrap = process.argv[2]
const client = 'kafkajs'
const topic = `${client}-t`
const groupId = `${client}-g`
const PARTITIONS = 3
const RECORDS = 100
const RETENTION = '3600000'
const BAD_RETENTION = 'not-a-number'
const values = Array.from({ length: RECORDS }, (_, i) => `${client}-${i}`)

const kafka = new Kafka({
  clientId: client,
  brokers: [bootstrap],
  logLevel: logLevel.WARN,
  connectionTimeout: 5000,
  requestTimeout: 15000,
  retry: { retries: 5, maxRetryTime: 5000 },
})
const admin = kafka.admin()
let consumer = null
let failed = false

class StepFailed extends Error {}

function report (step, result, reason) {
  let line = `STEP ${step} ${result}`
  if (reason) line += ' ' + String(reason).split(/\s+/).join(' ').slice(0, 300)
  process.stdout.write(line + '\n')
  if (result === 'FAIL') failed = true
}

function withDeadline (promise, seconds, what) {
  let timer
  const deadline = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new StepFailed(`${what} not within ${seconds} s`)), seconds * 1000)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

// Calls `fn` until it returns a true value, for at most `seconds`.
async function pollUntil (what, fn, seconds, intervalMs = 200) {
  const end = Date.now() + seconds * 1000
  let last
  for (;;) {
    try {
      const result = await fn()
      if (result) return result
      last = result
    } catch (e) {
      last = `${e.name}: ${e.message}`
    }
    if (Date.now() >= end) throw new StepFailed(`${what} not within ${seconds} s (last: ${last})`)
    await new Promise(resolve => setTimeout(resolve, intervalMs))
  }
}

function describeError (e) {
  return e instanceof StepFailed ? e.message : `${e.name}${e.type ? ' ' + e.type : ''}: ${e.message}`
}

async function run (step, fn, seconds = 50) {
  try {
    await withDeadline(fn(), seconds, 'a result')
    report(step, 'ok')
  } catch (e) {
    process.stderr.write(`--- ${client} ${step}: ${e.stack || e}\n`)
    report(step, 'FAIL', describeError(e))
  }
}

async function createTopic () {
  await admin.connect()
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }],
    waitForLeaders: true,
    timeout: 15000,
  })
  if (!created) throw new StepFailed(`${topic} already existed`)
  await pollUntil(`metadata of ${topic} with ${PARTITIONS} partitions`, async () => {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] })
    return topics.length === 1 && topics[0].partitions.length === PARTITIONS
  }, 20)
}

async function produce () {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner })
  await producer.connect()
  try {
    // send() resolves once every record is acknowledged (acks=-1: all in-sync replicas).
    const acks = await producer.send({
      topic,
      acks: -1,
      messages: values.map(v => ({ key: v, value: v })),
    })
    const bad = acks.filter(a => a.errorCode !== 0)
    if (bad.length) throw new StepFailed(`partition ${bad[0].partition}: error ${bad[0].errorCode}`)
    if (acks.length === 0) throw new StepFailed('no acknowledgement')
  } finally {
    await producer.disconnect()
  }
}

// Values read per partition, and the next offset to read on each.
const got = []
const next = {}

async function consumeGroup () {
  consumer = kafka.consumer({ groupId, sessionTimeout: 10000, heartbeatInterval: 1000 })
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      got.push([message.key.toString(), message.value.toString()])
      next[partition] = (BigInt(message.offset) + 1n).toString()
    },
  })
  await pollUntil(`${RECORDS} records`, () => got.length >= RECORDS, 45, 50)
    .catch(e => { throw new StepFailed(`${e.message} (have ${got.length})`) })
  const bad = got.filter(([k, v]) => k !== v)
  if (bad.length) throw new StepFailed(`key differs from value, e.g. ${bad[0]}`)
  const seen = new Set(got.map(([, v]) => v))
  const missing = values.filter(v => !seen.has(v))
  if (got.length !== RECORDS || missing.length) {
    throw new StepFailed(`consumed ${got.length} records, ${missing.length} missing ` +
      `(${missing.slice(0, 3)}), ${got.length - seen.size} duplicated`)
  }
}

async function commit () {
  if (!consumer) throw new StepFailed('no consumer (consume_group failed)')
  await consumer.commitOffsets(Object.entries(next).map(([partition, offset]) =>
    ({ topic, partition: Number(partition), offset })))
  const [fetched] = await admin.fetchOffsets({ groupId, topics: [topic] })
  const offsets = fetched.partitions.map(p => [p.partition, Number(p.offset)])
  const sum = offsets.reduce((a, [, o]) => a + o, 0)
  if (offsets.length !== PARTITIONS || sum !== RECORDS) {
    throw new StepFailed(`committed offsets ${JSON.stringify(offsets)}: expected ` +
      `${PARTITIONS} partitions summing to ${RECORDS}`)
  }
}

async function listOffsets () {
  const offsets = await admin.fetchTopicOffsets(topic)
  const low = offsets.map(o => [o.partition, Number(o.low)])
  const high = offsets.map(o => [o.partition, Number(o.high)])
  if (offsets.length !== PARTITIONS || low.some(([, o]) => o !== 0)) {
    throw new StepFailed(`earliest offsets ${JSON.stringify(low)}, expected 0 on each of ` +
      `${PARTITIONS} partitions`)
  }
  const sum = high.reduce((a, [, o]) => a + o, 0)
  if (sum !== RECORDS) {
    throw new StepFailed(`latest offsets ${JSON.stringify(high)}: expected ${PARTITIONS} ` +
      `partitions summing to ${RECORDS}`)
  }
}

async function retention () {
  const { resources } = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
  })
  const entry = resources[0].configEntries.find(e => e.configName === 'retention.ms')
  if (!entry) throw new StepFailed('DescribeConfigs lists no retention.ms')
  return entry.configValue
}

function alter (value) {
  return admin.alterConfigs({
    validateOnly: false,
    resources: [{
      type: ConfigResourceTypes.TOPIC,
      name: topic,
      configEntries: [{ name: 'retention.ms', value }],
    }],
  })
}

async function alterConfig () {
  await alter(RETENTION)
  await pollUntil(`retention.ms = ${RETENTION} in DescribeConfigs`,
    async () => (await retention()) === RETENTION, 10)
}

async function badInput () {
  const before = await retention()
  try {
    await alter(BAD_RETENTION)
  } catch (e) {
    // A refusal by the broker is a protocol error other than UNSUPPORTED_VERSION; an API the
    // broker does not list, a timeout or a lost connection is no refusal.
    if (e.name !== 'KafkaJSProtocolError' || e.type === 'UNSUPPORTED_VERSION') {
      throw new StepFailed(`not refused by the broker: ${describeError(e)}`)
    }
    process.stderr.write(`bad_input refused as expected: ${describeError(e)}\n`)
    const after = await retention()
    if (after !== before) throw new StepFailed(`retention.ms changed from ${before} to ${after}`)
    return
  }
  throw new StepFailed(`retention.ms=${BAD_RETENTION} was accepted`)
}

async function main () {
  const steps = [
    ['create_topic', createTopic], ['produce', produce], ['consume_group', consumeGroup],
    ['commit', commit], ['list_offsets', listOffsets], ['alter_config', alterConfig],
    ['bad_input', badInput],
  ]
  for (const [name, fn] of steps) {
    await run(name, fn)
    if (name === 'commit' && consumer) {
      await withDeadline(consumer.disconnect(), 20, 'consumer.disconnect') // leaves the group
    }
  }
  await withDeadline(admin.disconnect(), 10, 'admin.disconnect')
  process.exit(failed ? 1 : 0)
}

main().catch(e => {
  process.stderr.write(`${e.stack || e}\n`)
  process.exit(2)
})
