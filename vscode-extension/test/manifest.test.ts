/** package.json against the requirements, and against the server's own setting defaults. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { CONTRIBUTED_COMMANDS } from '../stubs/fixtures';

const root = path.join(__dirname, '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const props: Record<string, { type: string; default: unknown; enum?: string[]; minimum?: number; maximum?: number }> =
  pkg.contributes.configuration.properties;


describe('package.json', () => {
  it('declares the settings with the required types and defaults', () => {
    const expected: Record<string, [string, unknown]> = {
      'tandem.enable': ['boolean', true],
      'tandem.modelPath': ['string', ''],
      'tandem.device': ['string', 'auto'],
      'tandem.modelSize': ['string', 'auto'],
      'tandem.maxTokensSingleLine': ['integer', 32],
      'tandem.maxTokensMultiLine': ['integer', 128],
      'tandem.contextTokens': ['integer', 1536],
      'tandem.prefixShare': ['number', 0.7],
      'tandem.debounceMs': ['integer', 150],
      'tandem.warmAtCursor': ['boolean', true],
      'tandem.python': ['string', ''],
      'tandem.functionCandidates': ['integer', 0],
      'tandem.verifyExamples': ['boolean', true],
      'tandem.verifyTimeoutMs': ['integer', 5000],
      'tandem.maxTokensFunction': ['integer', 320],
      'tandem.functionPrompt': ['string', 'auto'],
      'tandem.contextShare': ['number', 0.4],
      'tandem.contextSources': ['array', ['imports', 'similar', 'path']],
      'tandem.backend': ['string', 'local'],
      'tandem.endpoint': ['string', ''],
      'tandem.apiModel': ['string', ''],
      'tandem.apiKeyEnv': ['string', 'TANDEM_API_KEY'],
      'tandem.learnBudgetMinutes': ['number', 10],
      'tandem.learnMinGain': ['number', 2],
      'tandem.feedback': ['boolean', false],
    };
    assert.deepEqual(Object.keys(props).sort(), Object.keys(expected).sort());
    for (const [key, [type, dflt]] of Object.entries(expected)) {
      assert.equal(props[key].type, type, key);
      assert.deepEqual(props[key].default, dflt, key);
    }
    assert.deepEqual(props['tandem.device'].enum, ['auto', 'cuda', 'cpu']);
    assert.deepEqual(props['tandem.modelSize'].enum, ['auto', '0.5b', '1.5b']);
    assert.deepEqual(props['tandem.functionPrompt'].enum, ['auto', 'chat', 'fim']);
    assert.deepEqual(props['tandem.backend'].enum, ['local', 'openai']);
    assert.equal(props['tandem.prefixShare'].minimum, 0.1);
    assert.equal(props['tandem.prefixShare'].maximum, 0.9);
  });

  it('declares the commands, and not the ones the language client registers', () => {
    const ids = pkg.contributes.commands.map((c: { command: string }) => c.command);
    assert.deepEqual(ids.sort(), [...CONTRIBUTED_COMMANDS].sort());
    assert.ok(!ids.includes('tandem.completionAccepted'));
    assert.ok(!ids.includes('tandem.explain'));
  });

  it('points at the bundle and needs VS Code 1.91+', () => {
    assert.equal(pkg.main, './dist/extension.js');
    assert.equal(pkg.engines.vscode, '^1.91.0');
    const typesVersion = JSON.parse(fs.readFileSync(path.join(root, 'node_modules/@types/vscode/package.json'), 'utf8')).version;
    assert.ok(typesVersion.startsWith('1.91.'), `@types/vscode ${typesVersion} must not exceed engines.vscode`);
    const lcMajor = Number(pkg.dependencies['vscode-languageclient'].replace(/^\D*/, '').split('.')[0]);
    assert.ok(lcMajor >= 10);
    // vsce asks about a missing repository field unless told not to: packaging must not prompt.
    assert.ok(pkg.repository?.url || pkg.scripts.package.includes('--allow-missing-repository'),
      'vsce would prompt for a repository');
  });
});

// The server parses the same section; its defaults and limits must agree with the manifest.
const serverSettings = path.join(root, '..', 'server', 'tandem', 'settings.py');
describe('agreement with server/tandem/settings.py', { skip: !fs.existsSync(serverSettings) && 'server settings not present' }, () => {
  it('has the same defaults and limits', () => {
    const py = fs.readFileSync(serverSettings, 'utf8');
    for (const m of py.matchAll(/^\s{4}(\w+): (?:bool|str|int|float) = ([^#\n]+)/gm)) {
      const key = `tandem.${m[1]}`;
      const raw = m[2].trim();
      const value = raw === 'True' ? true : raw === 'False' ? false : /^["']/.test(raw) ? raw.slice(1, -1) : Number(raw);
      assert.ok(key in props, `${key} is in the server but not in package.json`);
      assert.equal(props[key].default, value, key);
    }
    for (const m of py.matchAll(/"(\w+)": \(([\d.]+), ([\d.]+)\)/g)) {
      const key = `tandem.${m[1]}`;
      assert.equal(props[key].minimum, Number(m[2]), `${key} minimum`);
      assert.equal(props[key].maximum, Number(m[3]), `${key} maximum`);
    }
  });
});
