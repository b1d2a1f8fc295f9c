/**
 * What people type stays text where others read it as Markdown: the Temporal Web UI's details,
 * the postmortem, a Slack notification. Rendered with a real GFM renderer (marked), an attacker's
 * description must not become a disguised link, an HTML tag, a forged timeline line or a broken
 * code span.
 */
import { marked } from 'marked';
import { describe, expect, it } from 'vitest';
import { webhookBody } from '../activities/notify.js';
import { postmortem } from '../server/report.js';
import { mdBlock, mdCode, mdText } from '../workflows/markdown.js';
import type { SessionState, TranscriptEntry } from '../workflows/session-types.js';

const render = (markdown: string) => marked.parse(markdown, { async: false });
const DISGUISED = 'see [the runbook](https://evil.example/phish) or <img src=x onerror=alert(1)> **now**, www.evil.example, ops@evil.example';

describe('user text in Markdown', () => {
  it('when text with a disguised link, HTML and emphasis is rendered inline, then none of it becomes markup', () => {
    const html = render(`- 03:12 — ${mdText(DISGUISED)}`);
    expect(html).not.toMatch(/<a |<img|<strong>/);
    // Shown as typed, and nothing in it clickable.
    expect(html).toContain('[the runbook](https://evil.example/phish)');
    expect(html).toContain('www.evil.example, ops@evil.example');
  });

  it('when a multi-line description tries to forge a timeline line or a heading, then it stays inside its block', () => {
    const forged = 'devvm hangs\n- 03:15 — **cycle** succeeded\n# Outcome: recovered\n```\nbreak out';
    const html = render(`## Problem reported\n\n${mdBlock(forged)}\n\n## Timeline\n`);
    expect(html.match(/<li>/g)).toBeNull();
    expect(html.match(/<h1/g)).toBeNull();
    expect(html.match(/<h2/g)).toHaveLength(2);
    expect(html).toContain('<pre><code class="language-text">');
  });

  it('when a command holds backticks, then its code span holds all of it', () => {
    for (const command of ['echo `id`', '``', 'a ` b `` c', '`start']) {
      const html = render(`run ${mdCode(command)} now`);
      expect(html.match(/<code>/g)).toHaveLength(1);
      expect(html.replace(/&#39;/g, "'").replace(/&amp;/g, '&')).toContain(`<code>${command}</code>`);
    }
  });

  it('when the postmortem is built from a hostile description, reason and command, then its timeline has only the lines the session wrote', () => {
    const at = Date.UTC(2026, 11, 5, 3, 0);
    const state = { target: { devvm: 'devvm', vmid: 102 }, operator: 'alice', startedAt: at, outcome: 'ended', description: 'wedged\n- 03:20 — **cycle** succeeded' } as unknown as SessionState;
    const entries = [
      { seq: 1, at, type: 'session-started', operator: 'alice', description: state.description, target: state.target, policy: {} },
      { seq: 2, at, type: 'request', item: { kind: 'verb', key: 'k1', verb: 'status', reason: DISGUISED, requestedBy: { kind: 'operator', name: 'alice' }, approvedBy: [] } },
      { seq: 3, at, type: 'request', item: { kind: 'command', key: 'k2', command: 'echo `id`', timeoutSeconds: 5, requestedBy: { kind: 'operator', name: 'alice' }, approvedBy: [] } },
    ] as unknown as TranscriptEntry[];
    const html = render(postmortem('bg-1', state, entries, null));
    const timeline = html.slice(html.indexOf('Timeline'), html.indexOf('Operator actions'));
    expect(timeline.match(/<li>/g)).toHaveLength(3);
    expect(html).not.toMatch(/<a |<img/);
    expect(html).toContain('<code>echo `id`</code>');
  });

  it('when a Slack notification carries a mention or a disguised link, then Slack gets it escaped', () => {
    const body = webhookBody({ webhookUrl: 'https://hooks.slack.example/x', format: 'slack' }, { kind: 'verb', sessionId: 'bg-1', verb: 'cycle', outcome: 'failed', detail: '<!channel> see <https://evil.example|the runbook> & more' }) as { text: string };
    expect(body.text).toContain('&lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; more');
    expect(body.text).not.toMatch(/<!channel>|<https:\/\/evil/);
  });
});
