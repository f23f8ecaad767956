-- Drives a real Neovim through Tandem's hover explanations, the way a user would: accept an
-- inline completion with <Tab> (Neovim runs the item's command, tandem.completionAccepted),
-- hover the accepted code with vim.lsp.buf.hover() and read the floating window, edit inside
-- it and hover again, hover outside it, then run the "Explain this code" code action on a
-- selection and read the document the server opens. Loaded by the init.lua that
-- tests/editor/nvim.py (run_script) writes. Every wait has a deadline; the JSON result is
-- rewritten after every step.

local api = vim.api
local here = vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2))
local S = dofile(vim.fs.joinpath(here, 'session.lua'))({ notifications = {}, commands = {}, hovers = {} }, 'all steps done')
local cfg, result, now_ms, event, save, finish = S.cfg, S.result, S.now_ms, S.event, S.save, S.finish
local wait_until, feed, buffer_text = S.wait_until, S.feed, S.buffer_text

local orig_notify = vim.notify
vim.notify = function(msg, level, opts)
  table.insert(result.notifications, { at_ms = now_ms(), msg = tostring(msg), level = level })
  event('notify: %s', tostring(msg))
  return orig_notify(msg, level, opts)
end

-- Watch the answers to workspace/executeCommand and textDocument/hover.
local function watch(client)
  local orig = client.request
  client.request = function(self, method, params, handler, bufnr)
    if method == 'workspace/executeCommand' or method == 'textDocument/hover' then
      local rec = { method = method, sent_ms = now_ms(), command = params and params.command,
        arguments = params and params.arguments, position = params and params.position }
      local inner = handler
      handler = function(err, res, ctx, conf)
        rec.answered_ms = now_ms()
        rec.error = err and (err.message or tostring(err)) or nil
        rec.result = res == nil and vim.NIL or res
        if method == 'workspace/executeCommand' then
          table.insert(result.commands, rec)
          event('executeCommand %s answered after %.0f ms', tostring(rec.command), rec.answered_ms - rec.sent_ms)
        else
          event('hover answered after %.0f ms', rec.answered_ms - rec.sent_ms)
        end
        if inner then
          return inner(err, res, ctx, conf)
        end
      end
    end
    return orig(self, method, params, handler, bufnr)
  end
end

S.on_attach(watch)





local function floats()
  local out = {}
  for _, w in ipairs(api.nvim_list_wins()) do
    if api.nvim_win_get_config(w).relative ~= '' then
      table.insert(out, w)
    end
  end
  return out
end

local function close_floats()
  for _, w in ipairs(floats()) do
    pcall(api.nvim_win_close, w, true)
  end
end

-- Hover at (row, col) like `K` does and read the floating window. Retries while the server
-- says the explanation is being written (until `settle_ms`). Calls done(rec).
local function hover_at(name, row, col, settle_ms, done)
  local rec = { name = name, position = { row, col }, tries = 0 }
  table.insert(result.hovers, rec)
  local deadline = now_ms() + settle_ms
  local function try()
    rec.tries = rec.tries + 1
    close_floats()
    api.nvim_win_set_cursor(0, { row + 1, col })
    local n_notes = #result.notifications
    local t = now_ms()
    vim.lsp.buf.hover()
    wait_until('a hover window or a notice (' .. name .. ')', cfg.hover_timeout_ms, function()
      local wins = floats()
      if #wins > 0 then
        local buf = api.nvim_win_get_buf(wins[1])
        local lines = api.nvim_buf_get_lines(buf, 0, -1, false)
        if #lines > 0 and table.concat(lines, ''):match('%S') then
          return { lines = lines }
        end
      end
      if #result.notifications > n_notes then
        return { notice = result.notifications[#result.notifications].msg }
      end
    end, function(got)
      rec.ms = now_ms() - t
      rec.lines = got.lines
      rec.notice = got.notice
      local text = got.lines and table.concat(got.lines, '\n') or ''
      event('hover %s (try %d) after %.0f ms: %s', name, rec.tries, rec.ms, got.notice or text:match('^[^\n]*'))
      save()
      if text:match('being written') or text:match('writing the explanation') then
        if now_ms() < deadline then
          return vim.defer_fn(try, 300)
        end
      end
      close_floats()
      done(rec)
    end)
  end
  try()
end

local function step_accept(buf, client)
  vim.o.virtualedit = 'onemore'
  api.nvim_win_set_cursor(0, { cfg.line + 1, cfg.col })
  feed('i', 'n')
  wait_until('ghost text', cfg.ghost_timeout_ms, function()
    local ns = api.nvim_get_namespaces()['nvim.lsp.inline_completion']
    return ns and #api.nvim_buf_get_extmarks(buf, ns, 0, -1, {}) > 0
  end, function()
    local before = buffer_text(buf)
    feed('<Tab>', 'm')
    wait_until('the buffer to change after <Tab>', 5000, function()
      return S.accepted_by_tab ~= nil and buffer_text(buf) ~= before
    end, function()
      result.accepted_text = buffer_text(buf)
      feed('<Esc>', 'n')
      wait_until('tandem.completionAccepted to be answered', 10000, function()
        for _, c in ipairs(result.commands) do
          if c.command == 'tandem.completionAccepted' and c.answered_ms then
            return c
          end
        end
      end, function(c)
        event('accept command result: %s', vim.inspect(c.result))
        wait_until('normal mode', 5000, function()
          return api.nvim_get_mode().mode == 'n'
        end, function()
          hover_at('accepted', cfg.hover.row, cfg.hover.col, cfg.explain_timeout_ms, function()
            -- Edit inside the accepted code, as a user would with `r`.
            local e = cfg.edit
            api.nvim_buf_set_text(buf, e.row, e.col, e.row, e.col + 1, { e.text })
            result.edited_text = buffer_text(buf)
            hover_at('edited', cfg.hover.row, cfg.hover.col, 2000, function()
              hover_at('outside', cfg.outside.row, cfg.outside.col, 0, function()
                -- "Explain this code" on a selection, through the code action.
                vim.lsp.buf.code_action({
                  range = { start = { cfg.select.start_row + 1, 0 }, ['end'] = { cfg.select.end_row + 1, 0 } },
                  filter = function(a)
                    return a.title:match('Explain') ~= nil
                  end,
                  apply = true,
                })
                local t = now_ms()
                wait_until('the explanation document to open', cfg.explain_timeout_ms, function()
                  for _, w in ipairs(api.nvim_list_wins()) do
                    local b = api.nvim_win_get_buf(w)
                    local name = api.nvim_buf_get_name(b)
                    if name:match('explain%-.*%.md$') then
                      local lines = api.nvim_buf_get_lines(b, 0, -1, false)
                      if #lines > 1 then
                        return { name = name, lines = lines }
                      end
                    end
                  end
                end, function(doc)
                  result.explain_doc = doc
                  result.explain_ms = now_ms() - t
                  event('explanation opened: %s', doc.name)
                  finish(nil)
                end)
              end)
            end)
          end)
        end)
      end)
    end)
  end)
end

local function start()
  local file = cfg.workspace .. '/' .. cfg.filename
  event('open %s', file)
  vim.cmd.edit(vim.fn.fnameescape(file))
  local buf = api.nvim_get_current_buf()
  local function client_of()
    return vim.lsp.get_clients({ bufnr = buf, name = 'tandem' })[1]
  end
  wait_until('the tandem server to attach', 20000, client_of, function(client)
    result.server_hover = client:supports_method('textDocument/hover', buf)
    wait_until('the model to be ready', cfg.ready_timeout_ms, function()
      local st = result.statuses[#result.statuses] or {}
      if st.state == 'error' or st.state == 'disabled' then
        error(('the server reports %s: %s'):format(st.state, tostring(st.message)), 0)
      end
      return st.state == 'ready'
    end, function()
      step_accept(buf, client)
    end)
  end)
end

vim.defer_fn(function()
  finish(('overall timeout of %.0f s reached'):format(cfg.total_timeout_ms / 1000))
end, cfg.total_timeout_ms)

api.nvim_create_autocmd('VimEnter', {
  once = true,
  callback = function()
    vim.schedule(function()
      local ok, err = pcall(start)
      if not ok then
        finish('driver error: ' .. tostring(err))
      end
    end)
  end,
})
