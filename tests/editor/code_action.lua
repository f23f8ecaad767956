-- A user picks "Generate function from docstring" from Neovim's code action menu: open the
-- file, wait for Tandem to be ready, put the cursor on the signature, run
-- vim.lsp.buf.code_action (Neovim resolves the action, applies its edit and runs its command),
-- wait for the buffer to change, :write, quit. Loaded by the init.lua that nvim.py writes;
-- input and output are JSON (TANDEM_DRIVER_CONFIG / cfg.result_path). Every wait has a deadline.
local api = vim.api
local here = vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2))
local S = dofile(vim.fs.joinpath(here, 'session.lua'))({ notifications = {} }, 'done')
local cfg, result, ms, event, save, finish = S.cfg, S.result, S.now_ms, S.event, S.save, S.finish
local function ready()
  return S.last_status().state == 'ready'
end
vim.notify = function(msg, level) table.insert(result.notifications, msg); save() end

-- Record what the server answered to resolve (its title says what was verified).
S.on_attach(function(client)
  local orig_request = client.request
  client.request = function(self, method, params, handler, bufnr)
    if method == 'codeAction/resolve' then
      local t = ms()
      local wrapped = function(err, res, ctx, conf)
        result.resolve_ms = ms() - t
        result.resolved_title = res and res.title
        event('resolve answered: %s', tostring(res and res.title))
        return handler(err, res, ctx, conf)
      end
      return orig_request(self, method, params, wrapped, bufnr)
    end
    return orig_request(self, method, params, handler, bufnr)
  end
end)

vim.schedule(function()
  vim.cmd.edit(vim.fn.fnameescape(cfg.workspace .. '/' .. cfg.file))
  local buf = api.nvim_get_current_buf()
  if not vim.wait(cfg.total_timeout_ms / 3, ready, 20) then
    return finish('Tandem did not report ready')
  end
  event('ready')
  api.nvim_win_set_cursor(0, { cfg.line + 1, cfg.col })
  local tick = api.nvim_buf_get_changedtick(buf)
  local t = ms()
  vim.lsp.buf.code_action({
    apply = true,
    filter = function(a) return a.title == 'Generate function from docstring' end,
  })
  if not vim.wait(cfg.total_timeout_ms / 2, function() return api.nvim_buf_get_changedtick(buf) ~= tick end, 20) then
    return finish('the buffer did not change after the code action')
  end
  result.edit_ms = ms() - t
  event('buffer changed')
  vim.cmd('silent write')
  result.lines = api.nvim_buf_get_lines(buf, 0, -1, false)
  if cfg.hover then
    -- Hover the new body (as `K` does) until the explanation is written.
    local t_hover = ms()
    local params = { textDocument = { uri = vim.uri_from_bufnr(buf) },
                     position = { line = cfg.hover.line, character = cfg.hover.col } }
    while ms() - t_hover < cfg.hover.timeout_ms do
      local answers = vim.lsp.buf_request_sync(buf, 'textDocument/hover', params, 5000) or {}
      for _, a in pairs(answers) do
        local c = a.result and a.result.contents
        local md = type(c) == 'table' and (c.value or c[1]) or c
        if type(md) == 'string' and not md:find('being written') and not md:find('writing the explanation') then
          result.hover, result.hover_ms = md, ms() - t_hover
        end
      end
      if result.hover then break end
      vim.wait(300)
    end
    event(result.hover and 'hover shown' or 'no hover')
  end
  finish(nil)
end)
