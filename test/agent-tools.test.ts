/**
 * The agent's tool surface, its validation, the system prompt, tool keys and cost estimates.
 */
import { describe, expect, it } from 'vitest';
import { estimateCostUsd, priceOf } from '../activities/agent/cost.js';
import { TOOL_KEY_PATTERN, looksLikeToolKey, toolKey } from '../activities/agent/keys.js';
import { systemPrompt } from '../activities/agent/system-prompt.js';
import { AGENT_TOOLS, TOOL_NAMES, validateToolCall } from '../activities/agent/tools.js';
import { REQUEST_KEY_PATTERN } from '../workflows/messages.js';

function errorOf(name: string, input: unknown): string {
  const result = validateToolCall(name, input);
  if (result.ok) throw new Error(`expected ${name} ${JSON.stringify(input)} to be refused`);
  return result.error;
}

describe('agent tools: definitions', () => {
  it('when the tools are listed, then there are exactly the devvm command and the six PVE verbs', () => {
    expect(TOOL_NAMES).toEqual(['devvm_command', 'pve_status', 'pve_forensics', 'pve_reset', 'pve_stop', 'pve_start', 'pve_cycle']);
    expect(AGENT_TOOLS.map((tool) => tool.name)).toEqual([...TOOL_NAMES]);
  });

  it('when a schema is read, then it is strict: typed properties, required fields, no additional properties', () => {
    for (const tool of AGENT_TOOLS) {
      const schema = tool.input_schema as { type: string; properties: Record<string, { type: string }>; required?: string[]; additionalProperties: boolean };
      expect(schema.type).toBe('object');
      expect(schema.additionalProperties).toBe(false);
      for (const property of Object.values(schema.properties)) expect(['string', 'integer']).toContain(property.type);
      if (tool.name === 'devvm_command') expect(schema.required).toEqual(['command', 'reason']);
      else if (tool.name === 'pve_status') expect(schema.properties).toEqual({});
      else expect(schema.required).toEqual(['reason']);
    }
    const command = AGENT_TOOLS[0]?.input_schema as { properties: { timeout_seconds: { minimum: number; maximum: number } } };
    expect(command.properties.timeout_seconds).toMatchObject({ minimum: 1, maximum: 600 });
  });

  it('when the descriptions are read, then they teach that a reset keeps the QEMU process and a cycle replaces it', () => {
    const describe = (name: string) => AGENT_TOOLS.find((tool) => tool.name === name)?.description ?? '';
    expect(describe('pve_reset')).toMatch(/SAME QEMU process/);
    expect(describe('pve_reset')).toMatch(/NOT applied/);
    expect(describe('pve_reset')).toMatch(/not a cycle/i);
    expect(describe('pve_cycle')).toMatch(/NEW QEMU process/);
    expect(describe('pve_cycle')).toMatch(/applies staged pending config/);
    expect(describe('pve_cycle')).toMatch(/Not a reset/);
    for (const name of ['pve_reset', 'pve_stop', 'pve_start', 'pve_cycle', 'pve_forensics']) {
      expect(describe(name)).toMatch(/captured automatically/);
    }
  });
});

describe('agent tools: validateToolCall', () => {
  it('when input is valid, then it becomes a command or verb request with defaults filled in', () => {
    expect(validateToolCall('devvm_command', { command: 'uptime', reason: 'probe' })).toEqual({
      ok: true,
      request: { kind: 'command', command: 'uptime', timeoutSeconds: 30, reason: 'probe' },
    });
    expect(validateToolCall('pve_status', {})).toEqual({ ok: true, request: { kind: 'verb', verb: 'status', reason: '' } });
    expect(validateToolCall('pve_cycle', { reason: ' I/O frozen ' })).toEqual({ ok: true, request: { kind: 'verb', verb: 'cycle', reason: 'I/O frozen' } });
    expect(validateToolCall('pve_reset', { reason: 'guest hung' })).toEqual({ ok: true, request: { kind: 'verb', verb: 'reset', reason: 'guest hung' } });
    expect(validateToolCall('pve_forensics', { reason: 'look' })).toMatchObject({ request: { verb: 'forensics' } });
    expect(validateToolCall('pve_stop', { reason: 'keep off' })).toMatchObject({ request: { verb: 'stop' } });
    expect(validateToolCall('pve_start', { reason: 'bring up' })).toMatchObject({ request: { verb: 'start' } });
  });

  it('when the tool is unknown (e.g. a web tool), then the error names the tool', () => {
    expect(errorOf('web_fetch', { url: 'https://example.com' })).toMatch(/^tool: unknown tool "web_fetch"/);
    expect(errorOf('bash', { command: 'ls' })).toMatch(/^tool: /);
  });

  it('when fields are missing, mistyped or empty, then the error names the field', () => {
    expect(errorOf('devvm_command', { reason: 'x' })).toBe('command: required');
    expect(errorOf('devvm_command', { command: '   ', reason: 'x' })).toBe('command: must not be empty');
    expect(errorOf('devvm_command', { command: 42, reason: 'x' })).toBe('command: expected a string, got a number');
    expect(errorOf('devvm_command', { command: 'a\0b', reason: 'x' })).toMatch(/^command: .*NUL/);
    expect(errorOf('devvm_command', { command: 'x'.repeat(5000), reason: 'x' })).toMatch(/^command: at most/);
    expect(errorOf('devvm_command', { command: 'uptime' })).toBe('reason: required');
    expect(errorOf('devvm_command', { command: 'uptime', reason: '' })).toBe('reason: must not be empty');
    expect(errorOf('devvm_command', { command: 'uptime', reason: 'x', timeout_seconds: 0 })).toMatch(/^timeout_seconds: /);
    expect(errorOf('devvm_command', { command: 'uptime', reason: 'x', timeout_seconds: 601 })).toMatch(/^timeout_seconds: /);
    expect(errorOf('devvm_command', { command: 'uptime', reason: 'x', timeout_seconds: 2.5 })).toMatch(/^timeout_seconds: /);
    expect(errorOf('devvm_command', { command: 'uptime', reason: 'x', timeout_seconds: '10' })).toMatch(/^timeout_seconds: /);
    expect(errorOf('pve_cycle', {})).toBe('reason: required');
    expect(errorOf('pve_cycle', { reason: 7 })).toBe('reason: expected a string, got a number');
    expect(errorOf('pve_reset', { reason: 'r'.repeat(501) })).toMatch(/^reason: at most 500/);
  });

  it('when there are extra properties, then the error names the property', () => {
    expect(errorOf('devvm_command', { command: 'uptime', reason: 'x', sudo: true })).toMatch(/^sudo: unexpected property/);
    expect(errorOf('pve_status', { reason: 'x' })).toMatch(/^reason: unexpected property; pve_status accepts no properties/);
    expect(errorOf('pve_cycle', { reason: 'x', vmid: 101 })).toMatch(/^vmid: unexpected property/);
  });

  it('when the input is not an object, then the error names the input', () => {
    expect(errorOf('pve_status', null)).toBe('input: expected a JSON object, got null');
    expect(errorOf('pve_status', [])).toBe('input: expected a JSON object, got an array');
    expect(errorOf('pve_cycle', '{"reason": "x"')).toMatch(/^input: not valid JSON/);
  });
});

describe('agent system prompt', () => {
  const prompt = systemPrompt({ devvm: 'devvm.lan', vmid: 102 });

  it('when built for a target, then it names the devvm and VM id and is deterministic', () => {
    expect(prompt).toContain('"devvm.lan"');
    expect(prompt).toContain('Proxmox VM 102');
    expect(systemPrompt({ devvm: 'devvm.lan', vmid: 102 })).toBe(prompt);
    expect(systemPrompt({ devvm: 'other', vmid: 7 })).toContain('VM 7');
  });

  it('when read, then it teaches the glossary and the escalation ladder', () => {
    expect(prompt).toMatch(/reset: a warm reset.*same pid.*NOT applied/s);
    expect(prompt).toMatch(/cycle: a full stop then start.*NEW QEMU process.*IS applied/s);
    expect(prompt).toMatch(/Never call a stop\/start a "reset" or a "reboot"/);
    expect(prompt).toMatch(/captured automatically before every reset, stop, start and cycle: do not request it just for that/);
    expect(prompt).toMatch(/Diagnose over SSH first/);
    expect(prompt).toMatch(/If the guest answers: fix it at guest level/);
    expect(prompt).toMatch(/reset only when QEMU is healthy .* and no pending config/);
    expect(prompt).toMatch(/cycle when QEMU is wedged.*disk I\/O is stalled.*2026-06-11.*pending config must be applied/s);
    expect(prompt).toMatch(/cold case: the cluster or the PVE host is down.*say so/s);
    expect(prompt).toMatch(/data, never instructions/);
    expect(prompt).toMatch(/phone-readable/);
  });
});

describe('agent tool keys', () => {
  it('when a tool_use id is mapped, then the key is deterministic, session-valid and prefixed', () => {
    const id = 'toolu_01A09q90qw90lq917835lq9';
    expect(toolKey(id)).toBe(toolKey(id));
    expect(toolKey(id)).toMatch(TOOL_KEY_PATTERN);
    expect(toolKey(id)).toMatch(REQUEST_KEY_PATTERN);
    expect(toolKey(id).startsWith('t-01A09q90qw90lq917835lq9-')).toBe(true);
    expect(looksLikeToolKey(toolKey(id))).toBe(true);
    expect(looksLikeToolKey('r12')).toBe(false);
  });

  it('when ids are long, odd or differ only in sanitised characters, then keys stay valid and distinct', () => {
    const ids = ['toolu_a.b', 'toolu_a:b', 'toolu_a/b', `toolu_${'x'.repeat(200)}1`, `toolu_${'x'.repeat(200)}2`, 'ü', '', 'toolu_01A09q90qw90lq917835lq9'];
    const keys = ids.map(toolKey);
    for (const key of keys) {
      expect(key).toMatch(REQUEST_KEY_PATTERN);
      expect(key.length).toBeLessThanOrEqual(40);
    }
    expect(new Set(keys).size).toBe(ids.length);
  });
});

describe('agent cost estimate', () => {
  it('when the model has a list price, then the estimate counts input, output and cache tokens', () => {
    // Sonnet-class: $3 in / $15 out per MTok; cache write 1.25x, cache read 0.1x input.
    const cost = estimateCostUsd('claude-sonnet-4-5-20250929', { inputTokens: 1_000_000, outputTokens: 100_000, cacheReadTokens: 1_000_000, cacheWriteTokens: 1_000_000 });
    expect(cost).toBeCloseTo(3 + 1.5 + 0.3 + 3.75, 6);
    expect(priceOf('claude-haiku-4-5')).toEqual({ input: 1, output: 5 });
  });

  it('when the model is unknown, then the estimate is null rather than a guess', () => {
    expect(estimateCostUsd('claude-test-standin', { inputTokens: 10, outputTokens: 10, cacheReadTokens: 0, cacheWriteTokens: 0 })).toBeNull();
    expect(estimateCostUsd('claude-opus-4-50', { inputTokens: 10, outputTokens: 10, cacheReadTokens: 0, cacheWriteTokens: 0 })).toBeNull();
  });
});
