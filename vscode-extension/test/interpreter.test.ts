import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  DEFAULT_PYTHON,
  expandPath,
  importErrorMessage,
  interpreterFromPythonApi,
  needsRestart,
  resolvePython,
} from '../src/logic/interpreter';

describe('resolvePython', () => {
  it('prefers the tandem.python setting', () => {
    assert.deepEqual(resolvePython({ setting: '/opt/py/bin/python', fromPythonExtension: '/venv/bin/python' }), {
      command: '/opt/py/bin/python',
      source: 'setting',
    });
  });
  it("falls back to the Python extension's interpreter, then python3", () => {
    assert.deepEqual(resolvePython({ setting: '  ', fromPythonExtension: '/venv/bin/python' }), {
      command: '/venv/bin/python',
      source: 'python-extension',
    });
    assert.deepEqual(resolvePython({}), { command: DEFAULT_PYTHON, source: 'default' });
    assert.equal(DEFAULT_PYTHON, 'python3');
  });
  it('expands ~ and ${workspaceFolder} in the setting', () => {
    assert.equal(resolvePython({ setting: '${workspaceFolder}/.venv/bin/python', workspaceFolder: '/w' }).command, '/w/.venv/bin/python');
    assert.equal(expandPath('~/py/bin/python', { home: '/home/u' }), path.join('/home/u', 'py/bin/python'));
    assert.equal(expandPath('${env:PYHOME}/bin/python', { env: { PYHOME: '/p' } }), '/p/bin/python');
    assert.equal(expandPath('${userHome}/x', { home: '/h' }), '/h/x');
  });
});

describe('interpreterFromPythonApi', () => {
  it('uses environments.resolveEnvironment for the executable', async () => {
    const api = {
      environments: {
        getActiveEnvironmentPath: () => ({ id: 'x', path: '/envs/a' }),
        resolveEnvironment: async () => ({ executable: { uri: { fsPath: '/envs/a/bin/python' } } }),
      },
    };
    assert.equal(await interpreterFromPythonApi(api), '/envs/a/bin/python');
  });
  it('falls back to the active path, then the old execution-details API', async () => {
    assert.equal(
      await interpreterFromPythonApi({ environments: { getActiveEnvironmentPath: () => ({ path: '/usr/bin/python3.11' }) } }),
      '/usr/bin/python3.11',
    );
    assert.equal(await interpreterFromPythonApi({ settings: { getExecutionDetails: () => ({ execCommand: ['/old/python'] }) } }), '/old/python');
    assert.equal(await interpreterFromPythonApi({ settings: { getExecutionDetails: () => ({ execCommand: ['conda', 'run'] }) } }), undefined);
  });
  it('returns undefined for a missing or odd API', async () => {
    assert.equal(await interpreterFromPythonApi(undefined), undefined);
    assert.equal(await interpreterFromPythonApi({}), undefined);
    assert.equal(await interpreterFromPythonApi(42), undefined);
  });
});

describe('needsRestart', () => {
  const affects = (changed: string[]) => (s: string) => changed.some((c) => c === s || c.startsWith(`${s}.`));
  it('restarts for python, modelPath and device', () => {
    for (const key of ['tandem.python', 'tandem.modelPath', 'tandem.device']) {
      assert.equal(needsRestart(affects([key])), true, key);
    }
  });
  it('does not restart for per-request settings', () => {
    for (const key of ['tandem.enable', 'tandem.debounceMs', 'tandem.maxTokensSingleLine', 'tandem.prefixShare', 'editor.fontSize']) {
      assert.equal(needsRestart(affects([key])), false, key);
    }
  });
});

describe('importErrorMessage', () => {
  it('names the interpreter and gives both fixes', () => {
    const m = importErrorMessage(
      { command: '/usr/bin/python3', source: 'default' },
      { ok: false, exitCode: 1, stderr: "Traceback...\nModuleNotFoundError: No module named 'tandem'\n" },
      '/home/u/tandem',
    );
    assert.match(m, /\/usr\/bin\/python3/);
    assert.match(m, /\/usr\/bin\/python3 -m pip install -e \/home\/u\/tandem/);
    assert.match(m, /tandem\.python/);
    assert.match(m, /No module named 'tandem'/);
  });
  it('uses a placeholder for an unknown checkout and explains a missing interpreter', () => {
    assert.match(importErrorMessage({ command: 'python3', source: 'setting' }, { ok: false, exitCode: 1 }), /<path to your tandem checkout>/);
    const m = importErrorMessage({ command: '/nope/python', source: 'setting' }, { ok: false, spawnError: 'not found (ENOENT)' });
    assert.match(m, /cannot run Python "\/nope\/python"/);
    assert.match(m, /tandem\.python/);
  });
});
