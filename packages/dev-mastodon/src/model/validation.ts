// ActiveRecord validation errors as Mastodon reports them. The message is Rails' RecordInvalid text
// ("Validation failed: <Attribute> <message>, …"); endpoints that use ValidationErrorFormatter (account
// updates) add `details` with one `ERR_<CODE>` entry per error under each attribute.

export interface ValidationEntry {
  /** The attribute's key in `details`, e.g. `fields`, `display_name`. */
  readonly attribute: string;
  /** Rails' human attribute name, e.g. `Fields`, `Display name`. */
  readonly humanName: string;
  /** The error symbol, e.g. `too_long`. */
  readonly code: string;
  /** The message without the attribute name, e.g. `is too long (maximum is 4 characters)`. */
  readonly message: string;
}

export class ValidationErrors {
  readonly entries: ValidationEntry[] = [];

  add(attribute: string, humanName: string, code: string, message: string): void {
    this.entries.push({ attribute, humanName, code, message });
  }

  get empty(): boolean {
    return this.entries.length === 0;
  }

  /** `ActiveRecord::RecordInvalid#message`. */
  fullMessage(): string {
    return `Validation failed: ${this.entries.map((e) => `${e.humanName} ${e.message}`).join(", ")}`;
  }

  /** ValidationErrorFormatter#as_json. */
  formatted(): { error: string; details: Record<string, Array<{ error: string; description: string }>> } {
    const details: Record<string, Array<{ error: string; description: string }>> = {};
    for (const e of this.entries) {
      (details[e.attribute] ??= []).push({ error: `ERR_${e.code.toUpperCase()}`, description: e.message });
    }
    return { error: this.fullMessage(), details };
  }
}

/** Rails' default `too_long` message. */
export function tooLong(maximum: number): string {
  return maximum === 1
    ? "is too long (maximum is 1 character)"
    : `is too long (maximum is ${maximum} characters)`;
}
