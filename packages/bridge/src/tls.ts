// A minimal TLS presentation-language codec (RFC 8446 §3, with RFC 9420 §2.1.2 variable-length vectors),
// used for every signed object of the bridge. The reader refuses truncation and trailing bytes.

export class TlsDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TlsDecodeError";
  }
}

const VARINT_MAX = 0x3fffffff;

export class TlsWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.byteLength;
    return this;
  }

  u8(v: number): this {
    return this.push(Uint8Array.of(v & 0xff));
  }

  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError("u16 out of range");
    return this.push(Uint8Array.of(v >>> 8, v & 0xff));
  }

  u64(v: bigint | number): this {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v));
    return this.push(b);
  }

  varint(n: number): this {
    if (!Number.isInteger(n) || n < 0 || n > VARINT_MAX) throw new RangeError("length out of range");
    if (n < 0x40) return this.push(Uint8Array.of(n));
    if (n < 0x4000) return this.push(Uint8Array.of(0x40 | (n >>> 8), n & 0xff));
    return this.push(Uint8Array.of(0x80 | (n >>> 24), (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff));
  }

  /** opaque data<V> */
  opaque(bytes: Uint8Array): this {
    return this.varint(bytes.byteLength).push(bytes);
  }

  string(text: string): this {
    return this.opaque(new TextEncoder().encode(text));
  }

  /** A vector of items, each written by `each`, prefixed with the total byte length. */
  vector<T>(items: readonly T[], each: (w: TlsWriter, item: T) => void): this {
    const inner = new TlsWriter();
    for (const item of items) each(inner, item);
    return this.opaque(inner.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const p of this.parts) {
      out.set(p, offset);
      offset += p.byteLength;
    }
    return out;
  }
}

export class TlsReader {
  private offset = 0;

  constructor(private readonly bytes: Uint8Array) {}

  private take(n: number): Uint8Array {
    if (this.offset + n > this.bytes.byteLength) throw new TlsDecodeError("truncated");
    const out = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  u8(): number {
    return this.take(1)[0]!;
  }

  u16(): number {
    const b = this.take(2);
    return (b[0]! << 8) | b[1]!;
  }

  u64(): bigint {
    const b = this.take(8);
    return new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0);
  }

  varint(): number {
    const first = this.u8();
    const prefix = first >>> 6;
    if (prefix === 0) return first & 0x3f;
    if (prefix === 1) {
      const v = ((first & 0x3f) << 8) | this.u8();
      if (v < 0x40) throw new TlsDecodeError("non-minimal length");
      return v;
    }
    if (prefix === 2) {
      const rest = this.take(3);
      const v = (((first & 0x3f) << 24) | (rest[0]! << 16) | (rest[1]! << 8) | rest[2]!) >>> 0;
      if (v < 0x4000) throw new TlsDecodeError("non-minimal length");
      return v;
    }
    throw new TlsDecodeError("invalid length prefix");
  }

  opaque(maxBytes: number): Uint8Array {
    const n = this.varint();
    if (n > maxBytes) throw new TlsDecodeError(`vector longer than ${maxBytes} bytes`);
    return this.take(n);
  }

  string(maxBytes: number): string {
    try {
      // ignoreBOM keeps a leading U+FEFF: otherwise two byte strings would decode to the same identity.
      return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(this.opaque(maxBytes));
    } catch (e) {
      if (e instanceof TlsDecodeError) throw e;
      throw new TlsDecodeError("invalid UTF-8");
    }
  }

  vector<T>(maxBytes: number, maxItems: number, each: (r: TlsReader) => T): T[] {
    const inner = new TlsReader(this.opaque(maxBytes));
    const items: T[] = [];
    while (!inner.done()) {
      if (items.length >= maxItems) throw new TlsDecodeError(`more than ${maxItems} items`);
      items.push(each(inner));
    }
    return items;
  }

  done(): boolean {
    return this.offset === this.bytes.byteLength;
  }

  /** Every decoder ends with this: trailing bytes are an error (DESIGN §2). */
  end(): void {
    if (!this.done()) throw new TlsDecodeError("trailing bytes");
  }
}
