/**
 * A deliberately non-deterministic copy of the session workflow: the replay suite's negative
 * control. It waits on a timer before doing what the real workflow does, so its first workflow
 * task issues a StartTimer command where every recorded history has the session's first
 * commands. Replaying a recorded history against it must fail; if it does not, the replay
 * check has stopped checking anything.
 */
import { sleep } from '@temporalio/workflow';
import { breakglassSession as recorded } from '../../workflows/session.js';

export async function breakglassSession(...args: Parameters<typeof recorded>): ReturnType<typeof recorded> {
  await sleep(1);
  return recorded(...args);
}
