/**
 * Optional webhook notifications (ntfy- or Slack-compatible JSON) for the moments an on-call
 * channel cares about: a session starts, a mutating verb ran (with its outcome), an approval is
 * needed, a session ends. Best effort: a failed notification never blocks the session.
 */
export type NotifyEvent =
  | { kind: 'session-started'; sessionId: string; operator: string; description: string }
  | { kind: 'verb'; sessionId: string; verb: string; outcome: string; detail: string }
  | { kind: 'approval-needed'; sessionId: string; approvalId: string; what: string; why: string }
  | { kind: 'approval-expired'; sessionId: string; approvalId: string; what: string; requester: string; minutes: number }
  | { kind: 'lease-taken-over'; sessionId: string; bySessionId: string; operator: string; verb: string; reason: string }
  | { kind: 'session-ended'; sessionId: string; outcome: string };

export interface NotifierConfig {
  webhookUrl: string;
  format: 'ntfy' | 'slack';
  /** Deep link base for the console, e.g. https://breakglass.example.com */
  consoleUrl?: string | null;
}

export function describeEvent(event: NotifyEvent): { title: string; message: string; urgent: boolean } {
  switch (event.kind) {
    case 'session-started':
      return { title: `Breakglass session ${event.sessionId} opened`, message: `${event.operator}: ${event.description}`, urgent: false };
    case 'verb':
      return { title: `${event.verb} ${event.outcome} (${event.sessionId})`, message: event.detail, urgent: event.outcome !== 'succeeded' };
    case 'approval-needed':
      return { title: `Approval needed in ${event.sessionId}`, message: `${event.what} — ${event.why}`, urgent: true };
    case 'approval-expired':
      return { title: `Approval expired in ${event.sessionId}`, message: `${event.what} (asked by ${event.requester}) was not approved within ${event.minutes} min: not run; ask again if it is still wanted`, urgent: false };
    case 'lease-taken-over':
      return { title: `VM lease taken over from ${event.sessionId}`, message: `${event.operator} (session ${event.bySessionId}) took it over to run ${event.verb}: ${event.reason}`, urgent: true };
    case 'session-ended':
      return { title: `Breakglass session ${event.sessionId} ended: ${event.outcome}`, message: `outcome ${event.outcome}`, urgent: false };
  }
}

/**
 * Slack's mrkdwn: `<!channel>`, `<@U…>` and `<url|disguise>` are built from `<`, `>` and `&`, which
 * Slack wants escaped in text it should show as written.
 */
function slackText(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function webhookBody(config: NotifierConfig, event: NotifyEvent): unknown {
  const { title, message, urgent } = describeEvent(event);
  const link = config.consoleUrl ? `${config.consoleUrl}/#/sessions/${event.sessionId}` : undefined;
  if (config.format === 'slack') return { text: `*${slackText(title)}*\n${slackText(message)}${link ? `\n<${link}|open the console>` : ''}` };
  // ntfy's JSON publishing: the topic is the last path segment of the webhook URL.
  const url = new URL(config.webhookUrl);
  const topic = url.pathname.split('/').filter(Boolean).pop() ?? 'breakglass';
  return { topic, title, message, priority: urgent ? 5 : 3, tags: ['rotating_light'], ...(link ? { click: link } : {}) };
}

export async function sendNotification(config: NotifierConfig, event: NotifyEvent, timeoutMs = 5_000): Promise<void> {
  // ntfy's JSON API is posted to the server root, the topic travels in the body.
  const target = config.format === 'ntfy' ? new URL('/', config.webhookUrl).toString() : config.webhookUrl;
  const response = await fetch(target, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(webhookBody(config, event)),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!response.ok) throw new Error(`notification webhook answered ${response.status}`);
}
