/**
 * Input limits, mirrored from workflows/messages.ts (that module also defines the workflow's
 * messages, which must not be bundled into the browser). The server enforces the real ones.
 */
export const MAX_MESSAGE_LENGTH = 8_000;
export const MAX_REASON_LENGTH = 500;
export const MAX_COMMAND_LENGTH = 4_096;
export const MAX_COMMAND_TIMEOUT_SECONDS = 600;
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 30;
