// The one HTTP client of the dashboard: every call carries the session's bearer token,
// creating calls carry an Idempotency-Key (a retried click never makes two VMs), and
// a refusal becomes an ApiError naming the field the API named.
import { forget, token } from './session';
import type { ErrorBody, Page } from './types';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

interface CallOptions {
  body?: unknown;
  /** Sends an Idempotency-Key (creating POSTs). */
  idempotent?: boolean;
  /** Uses this token instead of the session's (logging in). */
  bearer?: string;
}

export async function call<T>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json' };
  const secret = opts.bearer ?? token.value;
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.idempotent) headers['Idempotency-Key'] = crypto.randomUUID();
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `the controller did not answer (${(e as Error).message})`);
  }
  const text = await resp.text();
  const json = text ? safeParse(text) : undefined;
  if (!resp.ok) {
    const b = json as ErrorBody | undefined;
    if (resp.status === 401 && !opts.bearer) forget();
    throw new ApiError(resp.status, b?.error ?? `${resp.status} ${resp.statusText}`, b?.field ?? undefined);
  }
  return json as T;
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export const get = <T>(path: string) => call<T>('GET', path);
export const post = <T>(path: string, body?: unknown, idempotent = false) => call<T>('POST', path, { body, idempotent });

/** Every item of a paged list (`Page<T>`, `?continue=`), oldest first. */
export async function all<T>(path: string): Promise<T[]> {
  const out: T[] = [];
  let next: string | undefined;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const q = next === undefined ? '' : `${sep}continue=${encodeURIComponent(next)}`;
    const page = await get<Page<T>>(path + q);
    out.push(...page.items);
    next = page.continue;
  } while (next !== undefined);
  return out;
}

/** An error as one line for a person. */
export function describe(e: unknown): string {
  if (e instanceof ApiError) return e.field ? `${e.message} (field ${e.field})` : e.message;
  return String(e);
}

export const enc = encodeURIComponent;
