/** The API key: secret storage -> the server process's environment, never shown. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { serverOptions } from '../src/client';
import { ApiKeyHolder, DEFAULT_KEY_ENV, SECRET_ID, serverEnv, setApiKey, validKeyEnv, type SecretStore } from '../src/secrets';

const KEY = 'sk-team-5ecret-value';

class MemoryStore implements SecretStore {
  data = new Map<string, string>();
  async get(k: string) { return this.data.get(k); }
  async store(k: string, v: string) { this.data.set(k, v); }
  async delete(k: string) { this.data.delete(k); }
}

function deps(store: SecretStore | undefined, answer: string | undefined) {
  const said: string[] = [];
  const asked: { password: boolean }[] = [];
  let changed = 0;
  return {
    said, asked, changes: () => changed,
    d: {
      store,
      ask: async (o: { password: boolean }) => { asked.push(o); return answer; },
      info: (m: string) => said.push(m),
      changed: () => { changed += 1; },
    },
  };
}

describe('API key', () => {
  it('goes into the server environment under tandem.apiKeyEnv, and only when set', () => {
    assert.deepEqual(serverEnv('TANDEM_TEAM_KEY', KEY), { TANDEM_TEAM_KEY: KEY });
    assert.deepEqual(serverEnv(undefined, KEY), { [DEFAULT_KEY_ENV]: KEY });
    assert.deepEqual(serverEnv('TANDEM_API_KEY', undefined), {});
    const s = serverOptions('/py', '/w', serverEnv('OPENAI_API_KEY', KEY)) as { args: string[]; options: { env: NodeJS.ProcessEnv } };
    assert.equal(s.options.env.OPENAI_API_KEY, KEY);
    assert.equal(s.options.env.PYTHONUNBUFFERED, '1');
    assert.ok(!s.args.join(' ').includes(KEY), 'never on the command line (visible in ps)');
  });

  it('is never put in a variable other than TANDEM_* or an engine key', () => {
    assert.equal(validKeyEnv('AWS_SECRET_ACCESS_KEY'), DEFAULT_KEY_ENV);
    assert.equal(validKeyEnv('PATH'), DEFAULT_KEY_ENV);
    assert.equal(validKeyEnv('TANDEM_X'), 'TANDEM_X');
    assert.equal(validKeyEnv('VLLM_API_KEY'), 'VLLM_API_KEY');
    assert.deepEqual(Object.keys(serverEnv('HOME', KEY)), [DEFAULT_KEY_ENV]);
  });

  it('is stored from a password box, restarts the server, and is never shown', async () => {
    const store = new MemoryStore();
    const t = deps(store, `  ${KEY}  `);
    assert.equal(await setApiKey(t.d), 'stored');
    assert.equal(store.data.get(SECRET_ID), KEY);
    assert.equal(t.asked[0].password, true);
    assert.equal(t.changes(), 1);
    assert.ok(t.said.every((m) => !m.includes(KEY)));
    const holder = new ApiKeyHolder(store);
    await holder.load();
    assert.equal(holder.current, KEY);
  });

  it('is removed by an empty answer; Escape changes nothing', async () => {
    const store = new MemoryStore();
    store.data.set(SECRET_ID, KEY);
    const esc = deps(store, undefined);
    assert.equal(await setApiKey(esc.d), 'cancelled');
    assert.equal(store.data.get(SECRET_ID), KEY);
    assert.equal(esc.changes(), 0);
    const empty = deps(store, '');
    assert.equal(await setApiKey(empty.d), 'removed');
    assert.ok(!store.data.has(SECRET_ID));
    const holder = new ApiKeyHolder(store);
    await holder.load();
    assert.equal(holder.current, undefined);
  });

  it('without secret storage says where else to put it; a failing keychain means no key', async () => {
    const t = deps(undefined, KEY);
    assert.equal(await setApiKey(t.d), 'unavailable');
    assert.match(t.said[0], /tandem\.apiKeyEnv/);
    const broken = new ApiKeyHolder({ get: async () => { throw new Error('no keychain'); }, store: async () => {}, delete: async () => {} });
    await broken.load();
    assert.equal(broken.current, undefined);
  });
});
