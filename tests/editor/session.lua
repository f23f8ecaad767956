-- What every Neovim driver here needs (driver.lua, hover.lua): the JSON config named by the
-- global TANDEM_DRIVER_CONFIG, a result file rewritten after every step (so a harness that has
-- to kill Neovim on a timeout still learns how far it got), the server's status notifications,
-- <Tab> accepting ghost text as a user would, and waits that fail the run at their deadline.
--
--   local S = dofile(<this file>)({ cases = {} })   -- extra fields of the result
--   S.event('...'); S.wait_until(what, ms, pred, on_done); S.finish(nil | err)

local api, uv = vim.api, vim.uv

return function(fields, done_message)
  local S = {}
  S.cfg = vim.json.decode(table.concat(vim.fn.readfile(TANDEM_DRIVER_CONFIG), '\n'))
  local T0 = uv.hrtime()
  function S.now_ms()
    return (uv.hrtime() - T0) / 1e6
  end

  S.result = vim.tbl_extend('force', { nvim_version = tostring(vim.version()), events = {}, statuses = {},
    done = false }, fields or {})
  local finished = false
  function S.finished()
    return finished
  end

  function S.save()
    local ok, encoded = pcall(vim.json.encode, S.result)
    if not ok then
      encoded = vim.json.encode({ error = 'could not encode the result: ' .. tostring(encoded) })
    end
    vim.fn.writefile({ encoded }, S.cfg.result_path)
  end

  function S.event(fmt, ...)
    table.insert(S.result.events, ('%9.1f ms  '):format(S.now_ms()) .. fmt:format(...))
    S.save()
  end

  function S.finish(err)
    if finished then
      return
    end
    finished = true
    S.result.error = err
    S.result.done = err == nil
    S.event(err and ('FAILED: ' .. err) or (done_message or 'done'))
    -- Leave without waiting on anything: the harness checks what is on disk.
    vim.schedule(function()
      vim.cmd(err and 'cquit! 3' or 'qall!')
    end)
  end

  -- The server's status notifications (init.lua routes tandem/status here).
  function TANDEM_ON_STATUS(params)
    params = params or {}
    params.at_ms = S.now_ms()
    table.insert(S.result.statuses, params)
    S.event('tandem/status %s: %s', tostring(params.state), tostring(params.message))
  end

  function S.last_status()
    return S.result.statuses[#S.result.statuses] or {}
  end

  -- Accepting like a user: <Tab> accepts the ghost text, or is a plain <Tab> when there is
  -- none (the mapping suggested by `:help vim.lsp.inline_completion.get()`).
  vim.o.columns = 160
  vim.o.lines = 60
  S.accepted_by_tab = nil
  vim.keymap.set('i', '<Tab>', function()
    S.accepted_by_tab = vim.lsp.inline_completion.get()
    if not S.accepted_by_tab then
      return '<Tab>'
    end
  end, { expr = true, desc = 'Accept the current inline completion' })

  -- Poll every few milliseconds; fail the whole run at the deadline (or call on_timeout).
  function S.wait_until(what, timeout_ms, pred, on_done, on_timeout)
    local deadline = S.now_ms() + timeout_ms
    local timer = assert(uv.new_timer())
    local stopped = false
    local function stop()
      stopped = true
      timer:stop()
      if not timer:is_closing() then
        timer:close()
      end
    end
    timer:start(0, S.cfg.poll_ms, vim.schedule_wrap(function()
      if stopped then
        return
      end
      if finished then
        return stop()
      end
      local ok, value = pcall(pred)
      if not ok then
        stop()
        return S.finish(('error while waiting for %s: %s'):format(what, tostring(value)))
      end
      if value then
        stop()
        local ok2, err = pcall(on_done, value)
        if not ok2 then
          S.finish(('error after %s: %s'):format(what, tostring(err)))
        end
      elseif S.now_ms() > deadline then
        stop()
        local msg = ('timed out after %.1f s waiting for %s'):format(timeout_ms / 1000, what)
        if on_timeout then
          local ok2, err = pcall(on_timeout, msg)
          if not ok2 then
            S.finish(('error after %s: %s'):format(msg, tostring(err)))
          end
        else
          S.finish(msg)
        end
      end
    end))
  end

  -- Call `watch(client)` once for the tandem client, when it attaches.
  function S.on_attach(watch)
    api.nvim_create_autocmd('LspAttach', {
      callback = function(ev)
        local client = vim.lsp.get_client_by_id(ev.data.client_id)
        if client and client.name == 'tandem' then
          if not client._tandem_watched then
            client._tandem_watched = true
            watch(client)
          end
          S.event('LspAttach tandem to buffer %d', ev.buf)
        end
      end,
    })
  end

  function S.feed(keys, mode)
    api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), mode, false)
  end

  function S.buffer_text(buf)
    local text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), '\n')
    if vim.bo[buf].eol then
      text = text .. '\n'
    end
    return text
  end

  return S
end
