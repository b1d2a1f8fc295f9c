/* global require, exports */
/**
 * The failure converter of a worker and client with the payload codec: an error's message and
 * stack trace travel as an encoded payload, so the codec encrypts them too (an activity's error
 * can quote devvm output). Plain CommonJS: the worker require()s it and the workflow bundle
 * includes it (failureConverterPath), and only the SDK's own sandbox-safe package is used.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- CommonJS on purpose (see above)
const { DefaultFailureConverter } = require('@temporalio/common');

exports.failureConverter = new DefaultFailureConverter({ encodeCommonAttributes: true });
