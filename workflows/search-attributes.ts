import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Typed search attributes, so `temporal workflow list --query "BreakglassOutcome='recovered'"`
 * and the Web UI can filter incident history. The dev server registers them at start
 * (lab/temporal-dev.ts); on an existing cluster the worker registers them when allowed.
 */
export const TARGET = defineSearchAttributeKey('BreakglassTarget', SearchAttributeType.KEYWORD);
export const OPERATOR = defineSearchAttributeKey('BreakglassOperator', SearchAttributeType.KEYWORD);
export const OUTCOME = defineSearchAttributeKey('BreakglassOutcome', SearchAttributeType.KEYWORD);
export const LAST_VERB = defineSearchAttributeKey('BreakglassLastVerb', SearchAttributeType.KEYWORD);
/** The VM at the session's last look, e.g. `running`, `running (QMP silent)`, `stopped`. */
export const VM_STATE = defineSearchAttributeKey('BreakglassVmState', SearchAttributeType.KEYWORD);
/**
 * The description's words (and the id's last part), lowercased: the console's search. Whole
 * words, because Text search is not available on every visibility store (not on SQLite).
 */
export const WORDS = defineSearchAttributeKey('BreakglassWords', SearchAttributeType.KEYWORD_LIST);

/** Name → type as the `temporal` CLI spells it. */
export const SEARCH_ATTRIBUTE_TYPES: Record<string, 'Keyword' | 'KeywordList'> = {
  BreakglassTarget: 'Keyword',
  BreakglassOperator: 'Keyword',
  BreakglassOutcome: 'Keyword',
  BreakglassLastVerb: 'Keyword',
  BreakglassVmState: 'Keyword',
  BreakglassWords: 'KeywordList',
};

/** The VM state as the session list shows it. */
export function vmStateWord(vm: { status: string; qmpstatus: string; qmp?: 'answered' | 'silent' | null }): string {
  if (vm.qmp === 'silent') return `${vm.status} (QMP silent)`;
  return vm.qmpstatus && vm.qmpstatus !== vm.status ? `${vm.status} (${vm.qmpstatus})` : vm.status;
}
