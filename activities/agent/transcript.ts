/**
 * Reads a session's whole transcript through queries, following continue-as-new back through
 * earlier runs (closed runs still answer queries). Used by the agent turn, which rebuilds its
 * conversation from the record instead of having it passed in (history stays linear), and by
 * the console's postmortem.
 */
import type { Client } from '@temporalio/client';
import { transcriptQuery } from '../../workflows/messages.js';
import type { TranscriptEntry, TranscriptPage } from '../../workflows/session-types.js';

const PAGE = 200;

export async function readFullTranscript(client: Client, workflowId: string, throughSeq = Number.POSITIVE_INFINITY): Promise<TranscriptEntry[]> {
  const runs: (string | undefined)[] = [undefined];
  let previous = (await client.workflow.getHandle(workflowId).query(transcriptQuery, { limit: 1 })).previousRunId;
  while (previous) {
    runs.unshift(previous);
    const page: TranscriptPage = await client.workflow.getHandle(workflowId, previous).query(transcriptQuery, { limit: 1 });
    previous = page.previousRunId;
  }
  const entries: TranscriptEntry[] = [];
  for (const runId of runs) {
    const handle = client.workflow.getHandle(workflowId, runId);
    let cursor: number | undefined;
    for (;;) {
      const page: TranscriptPage = await handle.query(transcriptQuery, { ...(cursor !== undefined ? { cursor } : {}), limit: PAGE });
      entries.push(...page.entries.filter((entry) => entry.seq <= throughSeq));
      if (!page.more) break;
      cursor = page.nextCursor ?? undefined;
    }
  }
  return entries;
}
