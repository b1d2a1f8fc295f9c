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

/** Name → type as the `temporal` CLI spells it. */
export const SEARCH_ATTRIBUTE_TYPES: Record<string, 'Keyword'> = {
  BreakglassTarget: 'Keyword',
  BreakglassOperator: 'Keyword',
  BreakglassOutcome: 'Keyword',
  BreakglassLastVerb: 'Keyword',
};
