// Who is logged in: the API token (kept in sessionStorage, so it dies with the tab)
// and what `GET /v1/whoami` says it is. What a page may offer follows the same roles
// the API enforces: viewers change nothing, only the system tenant sees hosts, only
// admins manage users, tokens and the audit log.
import { computed, signal } from '@preact/signals';
import type { Whoami } from './types';
import { SYSTEM_TENANT } from './types';

const KEY = 'nova.token';

export const token = signal<string | null>(sessionStorage.getItem(KEY));
export const me = signal<Whoami | null>(null);

export const canOperate = computed(() => me.value?.role === 'operator' || me.value?.role === 'admin');
export const isAdmin = computed(() => me.value?.role === 'admin');
export const isCluster = computed(() => me.value?.tenant === SYSTEM_TENANT && me.value?.role !== 'host');

export function remember(secret: string, who: Whoami) {
  sessionStorage.setItem(KEY, secret);
  token.value = secret;
  me.value = who;
}

export function forget() {
  sessionStorage.removeItem(KEY);
  token.value = null;
  me.value = null;
}
