/**
 * The console's attestation key in tests: `env.client` signs with it as the console's client
 * does, so its operator messages count; `env.rawClient` sends the same messages unsigned, as any
 * other Temporal client would.
 */
export const TEST_ATTESTATION_KEY = Buffer.from('breakglass-test-attestation-key-0123456789');
