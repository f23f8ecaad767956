/** Snooze timing: completions are suppressed until a point in time. Pure, clock injected. */

export const MAX_SNOOZE_MINUTES = 24 * 60;

/**
 * Validate the user's input for "snooze for N minutes". Returns an error message for the
 * input box, or undefined when the value is acceptable.
 */
export function validateSnoozeMinutes(text: string): string | undefined {
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value)) {
    return 'Enter a number of minutes, e.g. 15.';
  }
  if (value <= 0) {
    return 'Enter a positive number of minutes.';
  }
  if (value > MAX_SNOOZE_MINUTES) {
    return `At most ${MAX_SNOOZE_MINUTES} minutes (24 hours).`;
  }
  return undefined;
}

export function parseSnoozeMinutes(text: string): number | undefined {
  return validateSnoozeMinutes(text) === undefined ? Number(text.trim()) : undefined;
}

export class Snooze {
  private until = 0;

  constructor(private readonly now: () => number = Date.now) {}

  /** Snooze for `minutes` from now (replaces an earlier snooze). */
  start(minutes: number): number {
    this.until = this.now() + Math.round(minutes * 60_000);
    return this.until;
  }

  cancel(): void {
    this.until = 0;
  }

  remainingMs(): number {
    return Math.max(0, this.until - this.now());
  }

  isSnoozed(): boolean {
    return this.remainingMs() > 0;
  }
}
