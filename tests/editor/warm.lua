-- The README's Neovim block for `warmAtCursor` (between its "tandem: warm where the cursor
-- rests" markers, read from README.md and run as is): in normal mode, after an edit, the cursor
-- rests on a line and CursorHold fires; the block sends the code-action request a light bulb
-- would, and Tandem computes the prompt there (its `tandem.status` counts the warm). Loaded by
-- the init.lua that nvim.py writes; JSON in and out as the other drivers. Every wait has a deadline.
local api = vim.api
local here = vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2))
local S = dofile(vim.fs.joinpath(here, 'session.lua'))({}, 'done')
local cfg, result, ms, event, finish = S.cfg, S.result, S.now_ms, S.event, S.finish

local readme = table.concat(vim.fn.readfile(cfg.readme), '\n')
local block = readme:match('\n(%-%- tandem: warm where the cursor rests\n.-%-%- end of tandem: warm where the cursor rests)\n')
if not block then
  return finish('the README has no block between the "tandem: warm where the cursor rests" markers')
end
assert(load(block, 'README block'))()

local function status(buf)
  local client = vim.lsp.get_clients({ bufnr = buf, name = 'tandem' })[1]
  local answer = client and client:request_sync('workspace/executeCommand', { command = 'tandem.status' }, 5000, buf)
  return answer and answer.result or {}
end

vim.schedule(function()
  vim.cmd.edit(vim.fn.fnameescape(cfg.workspace .. '/' .. cfg.file))
  local buf = api.nvim_get_current_buf()
  if not vim.wait(cfg.total_timeout_ms / 3, function() return S.last_status().state == 'ready' end, 20) then
    return finish('Tandem did not report ready')
  end
  event('ready')
  api.nvim_buf_set_lines(buf, 0, 0, false, { '# edited' })  -- the user works in this file
  api.nvim_win_set_cursor(0, { cfg.line + 2, cfg.col })
  local t = ms()
  api.nvim_exec_autocmds('CursorHold', { buffer = buf })  -- what 'updatetime' of rest fires
  local warm
  vim.wait(cfg.total_timeout_ms / 2, function()
    warm = status(buf).warm
    return warm ~= nil and warm.warmed >= 1
  end, 100)
  result.warm, result.warm_ms = warm, ms() - t
  if not (warm and warm.warmed >= 1) then
    return finish('no warm after CursorHold: ' .. vim.inspect(warm))
  end
  event('warmed %d tokens', warm.tokens)
  finish(nil)
end)
