/** Shared expectations for the tests. */

/** The commands package.json contributes; activate() must register exactly these. */
export const CONTRIBUTED_COMMANDS = [
  'tandem.enable',
  'tandem.disable',
  'tandem.toggle',
  'tandem.snooze',
  'tandem.restartServer',
  'tandem.buildModel',
  'tandem.explainSelection',
  'tandem.showLog',
  'tandem.setApiKey',
  'tandem.learnWorkspace',
  'tandem.pickModelVersion',
  'tandem.rollbackModel',
];
