/** A shared, once-a-second clock for "checked 12 s ago" labels. */
export const clock = $state({ now: Date.now() });

if (typeof window !== 'undefined') {
  setInterval(() => {
    clock.now = Date.now();
  }, 1_000);
}
