/**
 * Rebuilding the Messages API conversation from the session transcript: tool_use/tool_result
 * pairing, pending calls, operator-initiated entries as notes, capping, redaction, elision.
 */
import type { MessageParam, TextBlockParam, ToolResultBlockParam } from '@anthropic-ai/sdk/resources/messages.js';
import { describe, expect, it } from 'vitest';
import { buildConversation, type ConversationOptions } from '../activities/agent/conversation.js';
import { toolKey } from '../activities/agent/keys.js';
import { REDACTED, redact, redactCounting } from '../activities/agent/redact.js';
import { runAgentTurn } from '../activities/agent/turn.js';
import type { AgentCommandRecord, AgentToolCall, AgentTranscriptEntry, AgentWorkItem, VmState } from '../activities/agent/types.js';
import { startMessagesApi, type MessagesApi } from '../lab/messages-api/server.js';
import type { TranscriptEntry } from '../workflows/session-types.js';

// Compile-time: the session's transcript entries are what the builder accepts. If a new entry
// type is added to TranscriptEntry, give it a shape in activities/agent/types.ts.
const acceptsSessionTranscript = (entries: TranscriptEntry[]): AgentTranscriptEntry[] => entries;
void acceptsSessionTranscript;

type Draft = AgentTranscriptEntry extends infer E ? (E extends AgentTranscriptEntry ? Omit<E, 'seq' | 'at'> : never) : never;

function transcript(...drafts: Draft[]): AgentTranscriptEntry[] {
  return drafts.map((draft, index) => ({ ...draft, seq: index + 1, at: 1_750_000_000_000 + index }) as AgentTranscriptEntry);
}

const OPTIONS: ConversationOptions = { maxContextTokens: 100_000, toolOutputHead: 4_000, toolOutputTail: 2_000 };
const USAGE = { inputTokens: 100, outputTokens: 20, cacheReadTokens: 0, cacheWriteTokens: 0 };

function vm(over: Partial<VmState> = {}): VmState {
  return { status: 'running', qmpstatus: 'running', pid: 4242, uptimeSeconds: 86_400, lock: '', pending: { present: false, lines: [] }, ...over };
}

const agent = (text: string, ...toolCalls: AgentToolCall[]): Draft => ({ type: 'agent-message', turn: `turn-${text.length}`, text, toolCalls, usage: USAGE });
const call = (id: string, name: string, input: unknown): AgentToolCall => ({ id, name, input });
const byAgent = (id: string, command: string): AgentWorkItem => ({ kind: 'command', key: toolKey(id), command, timeoutSeconds: 10, requestedBy: { kind: 'agent' } });
const record = (command: string, stdout: string, over: Partial<AgentCommandRecord> = {}): AgentCommandRecord => ({
  command,
  exitCode: 0,
  exitSignal: null,
  timedOut: false,
  stdout,
  stderr: '',
  droppedBytes: 0,
  durationMs: 120,
  ...over,
});

function blocks(message: MessageParam | undefined): (TextBlockParam | ToolResultBlockParam | { type: string; [key: string]: unknown })[] {
  if (!message || typeof message.content === 'string') return [];
  return message.content as never;
}

function resultText(block: unknown): string {
  const content = (block as ToolResultBlockParam).content;
  return typeof content === 'string' ? content : '';
}

/** What the Messages API insists on: user first, alternating roles, every tool_use answered next. */
function expectWellFormed(messages: MessageParam[]): void {
  expect(messages[0]?.role).toBe('user');
  messages.forEach((message, index) => {
    if (index > 0) expect(message.role).not.toBe(messages[index - 1]?.role);
    const content = blocks(message);
    expect(content.length).toBeGreaterThan(0);
    for (const block of content) if (block.type === 'text') expect((block as TextBlockParam).text).not.toBe('');
    const uses = content.filter((block) => block.type === 'tool_use').map((block) => (block as unknown as { id: string }).id);
    if (uses.length) {
      const next = blocks(messages[index + 1]);
      const results = next.filter((block) => block.type === 'tool_result').map((block) => (block as ToolResultBlockParam).tool_use_id);
      expect(results).toEqual(uses);
      const firstText = next.findIndex((block) => block.type !== 'tool_result');
      if (firstText !== -1) expect(next.slice(firstText).every((block) => block.type !== 'tool_result')).toBe(true);
    }
  });
  expect(messages[messages.length - 1]?.role).toBe('user');
}

describe('conversation: pairing tool calls and results', () => {
  it('when the agent made two calls and both results are in, then the next user message answers both, in order', () => {
    const entries = transcript(
      { type: 'session-started', operator: 'alice', description: 'devvm frozen', target: { devvm: 'devvm', vmid: 102 } },
      { type: 'operator-message', operator: 'alice', text: 'devvm is frozen, help' },
      agent('Checking.', call('toolu_a', 'devvm_command', { command: 'uptime', reason: 'probe' }), call('toolu_b', 'pve_status', {})),
      { type: 'request', item: byAgent('toolu_a', 'uptime') },
      { type: 'request', item: { kind: 'verb', key: toolKey('toolu_b'), verb: 'status', reason: '', requestedBy: { kind: 'agent' } } },
      { type: 'command-failed', key: toolKey('toolu_a'), command: 'uptime', kind: 'timeout', message: 'devvm did not answer within 10 s' },
      { type: 'status', key: toolKey('toolu_b'), result: { vm: vm({ pending: { present: true, lines: ['new: scsihw: virtio-scsi-single'] } }) } },
      agent('SSH is dead; QEMU runs with pending config.'),
    );
    const { messages, elidedToolResults } = buildConversation(entries, OPTIONS);
    expectWellFormed(messages);
    expect(elidedToolResults).toBe(0);
    expect(messages.map((m) => m.role)).toEqual(['user', 'assistant', 'user', 'assistant', 'user']);
    expect(blocks(messages[0])[0]).toMatchObject({ type: 'text' });
    expect((blocks(messages[0])[0] as TextBlockParam).text).toMatch(/Session opened by alice for devvm devvm \(VM 102\): devvm frozen\n\nMessage from operator alice:\ndevvm is frozen, help/);
    expect(blocks(messages[1])).toEqual([
      { type: 'text', text: 'Checking.' },
      { type: 'tool_use', id: 'toolu_a', name: 'devvm_command', input: { command: 'uptime', reason: 'probe' } },
      { type: 'tool_use', id: 'toolu_b', name: 'pve_status', input: {} },
    ]);
    const [first, second] = blocks(messages[2]) as ToolResultBlockParam[];
    expect(first).toMatchObject({ type: 'tool_result', tool_use_id: 'toolu_a', is_error: true });
    expect(resultText(first)).toBe('Command failed (timeout): devvm did not answer within 10 s');
    expect(second).toMatchObject({ type: 'tool_result', tool_use_id: 'toolu_b' });
    expect(second?.is_error).toBeUndefined();
    expect(resultText(second)).toMatch(/^VM status: running, pid 4242, .*pending config staged: new: scsihw: virtio-scsi-single/);
    // The last reply has nothing after it: a note keeps the conversation ending with the user.
    expect((blocks(messages[4])[0] as TextBlockParam).text).toBe('[nothing new since your last reply]');
  });

  it('when a call has no result yet, then it is answered as pending, and the later result arrives as a note without rewriting history', () => {
    const fix = call('toolu_fix', 'devvm_command', { command: 'sudo systemctl restart app', reason: 'OOM' });
    const upToApproval = transcript(
      { type: 'operator-message', operator: 'alice', text: 'fix it' },
      agent('Restarting app needs approval.', fix),
      { type: 'request', item: byAgent('toolu_fix', 'sudo systemctl restart app') },
      { type: 'approval-needed', approvalId: `a-${toolKey('toolu_fix')}`, item: byAgent('toolu_fix', 'sudo systemctl restart app'), why: 'outside the read-only allowlist', required: 1 },
      { type: 'operator-message', operator: 'alice', text: 'what are you waiting for?' },
    );
    const early = buildConversation(upToApproval, OPTIONS).messages;
    expectWellFormed(early);
    const pending = blocks(early[2])[0] as ToolResultBlockParam;
    expect(pending.tool_use_id).toBe('toolu_fix');
    expect(pending.is_error).toBeUndefined();
    expect(resultText(pending)).toMatch(/Waiting for operator approval: outside the read-only allowlist/);
    expect(resultText(pending)).toMatch(/Not run yet: waiting for operator approval/);
    expect((blocks(early[2])[1] as TextBlockParam).text).toMatch(/what are you waiting for\?/);

    const later = buildConversation(
      transcript(
        ...(upToApproval.map(({ seq: _seq, at: _at, ...rest }) => rest) as Draft[]),
        agent('Waiting for your approval of the restart.'),
        { type: 'approval', approvalId: `a-${toolKey('toolu_fix')}`, decision: 'approve', operator: 'bob', reason: '' },
        { type: 'command-result', key: toolKey('toolu_fix'), result: record('sudo systemctl restart app', '') },
      ),
      OPTIONS,
    ).messages;
    expectWellFormed(later);
    // Append-only: everything the model saw before is unchanged (the prompt-cache prefix holds).
    expect(later.slice(0, early.length)).toEqual(early);
    const note = (blocks(later[4])[0] as TextBlockParam).text;
    expect(note).toMatch(/^\[result of your earlier devvm_command call toolu_fix, which was pending when you last replied\]/);
    expect(note).toMatch(/Approved by bob/);
    expect(note).toMatch(/exit 0 \(0\.1 s\), no output/);
  });

  it('when the transcript ends right after the tool calls, then each is answered "not started yet" so the request stays valid', () => {
    const { messages } = buildConversation(
      transcript({ type: 'operator-message', operator: 'a', text: 'go' }, agent('', call('toolu_1', 'pve_forensics', { reason: 'look' }))),
      OPTIONS,
    );
    expectWellFormed(messages);
    expect(blocks(messages[1])).toEqual([{ type: 'tool_use', id: 'toolu_1', name: 'pve_forensics', input: { reason: 'look' } }]);
    expect(resultText(blocks(messages[2])[0])).toMatch(/Not started yet \(queued\)/);
  });

  it('when the model sent malformed tool input, then the tool_use carries {} and the result is the refusal, as an error', () => {
    const { messages } = buildConversation(
      transcript(
        { type: 'operator-message', operator: 'a', text: 'go' },
        agent('', call('toolu_bad', 'devvm_command', '{"command": "upt')),
        { type: 'agent-tool-error', toolUseId: 'toolu_bad', message: 'input: not valid JSON ("{\\"command\\": \\"upt")' },
      ),
      OPTIONS,
    );
    expectWellFormed(messages);
    expect(blocks(messages[1])[0]).toMatchObject({ type: 'tool_use', id: 'toolu_bad', input: {} });
    const result = blocks(messages[2])[0] as ToolResultBlockParam;
    expect(result.is_error).toBe(true);
    expect(resultText(result)).toMatch(/^Tool call refused, nothing ran: input: not valid JSON/);
  });

  it('when a mutation ran, then its result holds the forensics before it, the pid change and the SSH wait', () => {
    const cycle = call('toolu_cyc', 'pve_cycle', { reason: 'I/O frozen' });
    const key = toolKey('toolu_cyc');
    const { messages } = buildConversation(
      transcript(
        { type: 'operator-message', operator: 'a', text: 'go' },
        agent('Cycling.', cycle),
        { type: 'request', item: { kind: 'verb', key, verb: 'cycle', reason: 'I/O frozen', requestedBy: { kind: 'agent' } } },
        {
          type: 'forensics',
          key,
          trigger: 'cycle',
          result: {
            summary: {
              qmpAnswered: true,
              qmpStatus: 'running',
              ioFrozen: true,
              blockDeltas: [{ device: 'drive-scsi0', readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0, frozen: true }],
              guestAgentAnswered: false,
              qemuProcessState: 'S',
              timedOutSections: ['guest-agent ping'],
              failedSections: [],
            },
            sections: [{ name: 'qm config', exit: 0, timedOut: false, durationMs: 40, output: 'scsihw: virtio-scsi-pci', droppedBytes: 0 }],
          },
        },
        {
          type: 'verb-result',
          key,
          result: {
            verb: 'cycle',
            ok: true,
            before: vm({ pending: { present: true, lines: ['new: iothread: 1'] } }),
            after: vm({ pid: 5151, uptimeSeconds: 3 }),
            oldPid: 4242,
            newPid: 5151,
            pendingApplied: true,
            steps: [{ name: 'stop', exit: 0, timedOut: false, durationMs: 900, output: '' }],
          },
        },
        { type: 'devvm-wait', key, reachable: true, waitedMs: 12_300, attempts: 4 },
      ),
      OPTIONS,
    );
    expectWellFormed(messages);
    const text = resultText(blocks(messages[2])[0]);
    expect(text).toMatch(/Forensics captured before cycle:/);
    expect(text).toMatch(/QMP answered \(status running\); disk I\/O FROZEN: no block counter moved/);
    expect(text).toMatch(/drive-scsi0: \+0 B read, \+0 B written, \+0\/\+0 ops \(frozen\)/);
    expect(text).toMatch(/## qm config \(exit 0, 40 ms\)\nscsihw: virtio-scsi-pci/);
    expect(text).toMatch(/cycle succeeded; QEMU pid 4242 → 5151 \(new QEMU process\); pending config applied/);
    expect(text).toMatch(/devvm SSH answers again \(after 12 s\)/);
  });

  it('when the transcript starts mid-session (continue-as-new), then the conversation still starts with a user message', () => {
    const { messages } = buildConversation(transcript({ type: 'session-continued', previousRunId: 'run-1', firstSeq: 40 }, agent('Earlier I said hi.')), OPTIONS);
    expectWellFormed(messages);
    expect((blocks(messages[0])[0] as TextBlockParam).text).toMatch(/previous run/);
  });
});

describe('conversation: operator-initiated entries', () => {
  it('when an operator ran a command and a cycle, then the model sees them as notes naming who did what', () => {
    const { messages } = buildConversation(
      transcript(
        { type: 'operator-message', operator: 'alice', text: 'I am on it too' },
        { type: 'request', item: { kind: 'command', key: 'r1', command: 'df -h', timeoutSeconds: 30, requestedBy: { kind: 'operator', name: 'alice' } } },
        { type: 'command-result', key: 'r1', result: record('df -h', '/dev/sda1  100G  100G  0 100% /') },
        { type: 'request', item: { kind: 'verb', key: 'r2', verb: 'cycle', reason: 'disk stuck', requestedBy: { kind: 'operator', name: 'bob' } } },
        { type: 'verb-result', key: 'r2', result: { verb: 'cycle', ok: true, before: vm(), after: vm({ pid: 9000 }), oldPid: 4242, newPid: 9000, pendingApplied: false } },
        { type: 'paused', operator: 'bob', reason: 'lunch' },
      ),
      OPTIONS,
    );
    expectWellFormed(messages);
    expect(messages).toHaveLength(1);
    const text = (blocks(messages[0])[0] as TextBlockParam).text;
    expect(text).toMatch(/\[operator alice: `df -h` on the devvm\] exit 0 \(0\.1 s\)\nstdout:\n\/dev\/sda1 {2}100G/);
    expect(text).toMatch(/\[operator bob: cycle \(reason: disk stuck\)\] cycle succeeded; QEMU pid 4242 → 9000 \(new QEMU process\)/);
    expect(text).toMatch(/\[session paused by bob: lunch\]/);
  });
});

describe('conversation: capping, redaction, elision', () => {
  it('when output is huge, then the tool result keeps the head and the tail and states the dropped bytes', () => {
    const stdout = `FIRST-LINE\n${'x'.repeat(50_000)}\nLAST-LINE`;
    const { messages } = buildConversation(
      transcript(
        { type: 'operator-message', operator: 'a', text: 'go' },
        agent('', call('toolu_big', 'devvm_command', { command: 'journalctl', reason: 'r' })),
        { type: 'command-result', key: toolKey('toolu_big'), result: record('journalctl', stdout, { droppedBytes: 7_000 }) },
      ),
      { ...OPTIONS, toolOutputHead: 1_000, toolOutputTail: 500 },
    );
    const text = resultText(blocks(messages[2])[0]);
    expect(text.length).toBeLessThan(2_000);
    expect(text).toMatch(/^exit 0 \(0\.1 s\); 7000 bytes of output dropped by the command cap\nstdout:\nFIRST-LINE/);
    expect(text).toMatch(/LAST-LINE$/);
    expect(text).toMatch(/\[\d+ bytes dropped\]/);
  });

  it('when output holds a private key and a bearer token, then neither reaches the request body', async () => {
    const pem = ['-----BEGIN OPENSSH PRIVATE KEY-----', 'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW', 'QyNTUxOQAAACDmVQAFAKESECRETKEYMATERIAL', '-----END OPENSSH PRIVATE KEY-----'].join('\n');
    const stdout = `cat ~/.ssh/id_ed25519\n${pem}\ncurl -H "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.SECRETPAYLOAD.sig" https://x\nok`;
    const { messages } = buildConversation(
      transcript(
        { type: 'operator-message', operator: 'a', text: 'my key is sk-ant-api03-OPERATORSECRET1234567890 oops' },
        agent('', call('toolu_s', 'devvm_command', { command: 'cat notes', reason: 'r' })),
        { type: 'command-result', key: toolKey('toolu_s'), result: record('cat notes', stdout) },
      ),
      OPTIONS,
    );
    let api: MessagesApi | null = null;
    try {
      api = await startMessagesApi({ apiKey: 'k', script: () => ({ text: 'seen' }) });
      const result = await runAgentTurn({ apiKey: 'k', baseURL: api.url, model: 'claude-test-standin', maxTokens: 100, timeoutMs: 5_000 }, { system: 'test', messages });
      expect(result.text).toBe('seen');
      const body = api.requests[0]?.rawBody ?? '';
      expect(api.requests[0]?.status).toBe(200);
      expect(body).toContain('[REDACTED] (private key block)');
      expect(body).toContain('Authorization: Bearer [REDACTED]');
      for (const secret of ['SECRETKEYMATERIAL', 'b3BlbnNzaC1rZXktdjEAAAAABG5v', 'BEGIN OPENSSH PRIVATE KEY', 'SECRETPAYLOAD', 'OPERATORSECRET']) {
        expect(body).not.toContain(secret);
      }
      expect(body).toContain('ok');
    } finally {
      await api?.stop();
    }
  });

  it('when the conversation exceeds the budget, then the oldest outputs are elided with a note and the newest stay whole', () => {
    const drafts: Draft[] = [{ type: 'operator-message', operator: 'a', text: 'go' }];
    for (let i = 0; i < 20; i++) {
      const id = `toolu_${i}`;
      drafts.push(agent(`step ${i}`, call(id, 'devvm_command', { command: `cat /var/log/f${i}`, reason: 'r' })));
      drafts.push({ type: 'command-result', key: toolKey(id), result: record(`cat /var/log/f${i}`, `log ${i}\n${'y'.repeat(3_996)}`) });
    }
    const entries = transcript(...drafts);
    const whole = buildConversation(entries, OPTIONS);
    expect(whole.elidedToolResults).toBe(0);
    expect(whole.estimatedTokens).toBeGreaterThan(20_000);

    const fitted = buildConversation(entries, { ...OPTIONS, maxContextTokens: 8_000 });
    expectWellFormed(fitted.messages);
    expect(fitted.estimatedTokens).toBeLessThanOrEqual(8_000);
    expect(fitted.elidedToolResults).toBeGreaterThan(10);
    const first = resultText(blocks(fitted.messages[2])[0]);
    expect(first).toBe(`exit 0 (0.1 s)\n[older output elided: ${'stdout:\nlog 0\n'.length + 3_996} bytes]`);
    const newest = resultText(blocks(fitted.messages[fitted.messages.length - 1])[0]);
    expect(newest).toMatch(/^exit 0 \(0\.1 s\)\nstdout:\nlog 19\ny{3996}$/);
    // Same pairing as without elision: only bodies changed.
    expect(fitted.messages.map((m) => blocks(m).length)).toEqual(whole.messages.map((m) => blocks(m).length));
  });

  it('when an elided conversation keeps growing by small turns, then the elided set moves in rare quarter-budget steps (the cached prefix survives)', () => {
    const drafts: Draft[] = [{ type: 'operator-message', operator: 'a', text: 'go' }];
    for (let i = 0; i < 20; i++) {
      const id = `toolu_${i}`;
      drafts.push(agent(`step ${i}`, call(id, 'devvm_command', { command: 'uptime', reason: 'r' })));
      drafts.push({ type: 'command-result', key: toolKey(id), result: record('uptime', 'z'.repeat(4_000)) });
    }
    const options = { ...OPTIONS, maxContextTokens: 12_000 };
    let previous = buildConversation(transcript(...drafts), options);
    expect(previous.elidedToolResults).toBeGreaterThan(0);
    let changes = 0;
    // 30 turns of ~250 tokens each: 7,500 tokens of growth, i.e. 2.5 quarters of the budget.
    for (let i = 0; i < 30; i++) {
      const id = `toolu_grow_${i}`;
      drafts.push(agent(`more ${i}`, call(id, 'devvm_command', { command: 'free -m', reason: 'r' })));
      drafts.push({ type: 'command-result', key: toolKey(id), result: record('free -m', 'm'.repeat(900)) });
      const next = buildConversation(transcript(...drafts), options);
      expect(next.estimatedTokens).toBeLessThanOrEqual(12_000);
      if (next.elidedToolResults !== previous.elidedToolResults) changes++;
      // Between steps the earlier messages are byte-identical (the last user message grows).
      else expect(next.messages.slice(0, previous.messages.length - 1)).toEqual(previous.messages.slice(0, -1));
      previous = next;
    }
    expect(changes).toBeGreaterThan(0);
    expect(changes).toBeLessThanOrEqual(3);
  });
});

describe('redact', () => {
  it('when text holds well-known secret shapes, then each is replaced', () => {
    const cases: [string, string][] = [
      ['-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----', 'MIIEowIBAAKCAQEA'],
      ['-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n… [900 bytes dropped] …', 'MIIEvQIBADANBgkq'],
      ['MIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nAAAABBBBCCCCDDDDEEEE\n-----END EC PRIVATE KEY-----', 'AAAABBBBCCCCDDDDEEEE'],
      ['Authorization: Bearer abc.def.ghi-jkl', 'abc.def.ghi-jkl'],
      ['authorization: Basic dXNlcjpwYXNz', 'dXNlcjpwYXNz'],
      ['ANTHROPIC_API_KEY=sk-ant-api03-abcdefghijklmnop_qrstuv', 'abcdefghijklmnop'],
      ['key sk-ant-admin01-ZZZZZZZZZZZZZZ in logs', 'ZZZZZZZZZZZZZZ'],
      ['aws_access_key_id = AKIAIOSFODNN7EXAMPLE', 'AKIAIOSFODNN7EXAMPLE'],
      ['aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'wJalrXUtnFEMI'],
      ['DB_PASSWORD=hunter2', 'hunter2'],
      ['{"password": "correct horse"}', 'correct'],
      ['token: 0123456789abcdef', '0123456789abcdef'],
      ['export GITHUB_TOKEN=ghp_1234567890abcdefghijABCDEFGHIJ123456', '1234567890abcdefghij'],
      ['github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz', 'abcdefghijklmnopqrstuvwxyz'],
      ['git clone https://deploy:s3cr3tpass@git.example.com/repo.git', 's3cr3tpass'],
      ['PGPASSWORD=pa55 psql', 'pa55'],
    ];
    for (const [input, secret] of cases) {
      const output = redact(input);
      expect(output, input).not.toContain(secret);
      expect(output, input).toContain(REDACTED);
    }
  });

  it('when text is ordinary diagnostics, then it is left alone', () => {
    const text = [
      '[12345.678] Out of memory: Killed process 4242 (java) total-vm:8123456kB',
      'Jun 11 03:00:01 devvm kernel: INFO: task jbd2/sda1-8:312 blocked for more than 120 seconds.',
      ' 03:00:05 up 12 days,  2:01,  1 user,  load average: 87.00, 86.50, 80.10',
      'HTTP/1.1 401 Unauthorized: Authorization required',
      'sshd[991]: Accepted publickey for breakglass from 10.0.0.5 port 50522 ssh2: ED25519 SHA256:abc',
    ].join('\n');
    expect(redactCounting(text)).toEqual({ text, redactions: 0 });
  });
});

