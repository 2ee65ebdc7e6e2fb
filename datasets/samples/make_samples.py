#!/usr/bin/python3
"""Writes the sample style datasets of datasets/samples/ (original text, made
from combinatorial templates; deterministic: random.Random(seed)).

  pirate.jsonl     prompt/completion  a pirate voice answering everyday questions
  support.jsonl    messages           a terse support agent
  victorian.jsonl  alpaca             Victorian formality

Samples are short (under ~100 tokens with the stories260K tokenizer) so the
tiny test models can learn the style. Run: python3 make_samples.py (in this folder).
"""
import json
import random

N = 300


def write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def pirate(rng):
    things = [("the weather", "the sky be grey as a gull's wing"), ("breakfast", "ship's biscuit and a mug o' tea"),
              ("my cat", "a fine ship's cat, she be"), ("the bus", "a land galleon, late as the tide"),
              ("my homework", "a map with no treasure on it"), ("the garden", "a wee island o' green"),
              ("my phone", "a spyglass that talks back"), ("the rain", "Davy Jones weepin' on the deck"),
              ("my dog", "a loyal first mate wi' four legs"), ("the market", "a busy port full o' traders"),
              ("a bicycle", "a two-wheeled sloop"), ("the library", "a hold stuffed wi' charts and tales")]
    asks = ["What do you think of {t}?", "Tell me about {t}.", "How is {t} today?", "Any advice about {t}?",
            "Can you describe {t}?"]
    opens = ["Arr, ", "Ahoy, matey! ", "Shiver me timbers, ", "Yo ho, ", "Avast! "]
    closes = [" Now hoist the sails!", " Mind the plank.", " That be the truth of it.", " Savvy?",
              " Keep yer eye on the horizon."]
    rows, seen = [], set()
    while len(rows) < N:
        t, d = rng.choice(things)
        q = rng.choice(asks).format(t=t)
        a = rng.choice(opens) + t + "? " + d[0].upper() + d[1:] + "." + rng.choice(closes)
        if (q, a) in seen:
            continue
        seen.add((q, a))
        rows.append({"prompt": q, "completion": a})
    return rows


def support(rng):
    problems = [("I forgot my password.", "Click 'Forgot password' on the login page. Check your email."),
                ("The app crashes when I open it.", "Update the app, then restart your phone."),
                ("My order has not arrived.", "Send your order number. I will check the courier."),
                ("I was charged twice.", "Refund issued for the duplicate. Allow five days."),
                ("How do I change my email?", "Settings, then Account, then Email. Confirm the link."),
                ("The printer will not connect.", "Turn it off and on. Rejoin the Wi-Fi network."),
                ("Can I cancel my plan?", "Yes. Settings, Billing, Cancel. No fee."),
                ("The page is blank.", "Clear the cache and reload."),
                ("I cannot log in on my tablet.", "Sign out everywhere, then sign in again."),
                ("Where is my invoice?", "Billing, then History. Download the PDF.")]
    greet = ["Hi.", "Hello there.", "Good morning.", "Hey.", ""]
    please = ["Please help.", "What should I do?", "Any idea?", "Thanks in advance.", ""]
    follow = [("Thanks!", "Done. Anything else?"), ("It worked.", "Good. Closing the ticket."),
              ("Still broken.", "Send a screenshot. I will escalate.")]
    systems = ["You are a support agent. Be brief.", "Answer in as few words as possible."]
    rows, seen = [], set()
    while len(rows) < N:
        p, a = rng.choice(problems)
        u = " ".join(x for x in [rng.choice(greet), p, rng.choice(please)] if x)
        msgs = []
        if rng.random() < 0.2:
            msgs.append({"role": "system", "content": rng.choice(systems)})
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
        if rng.random() < 0.2:
            fu, fa = rng.choice(follow)
            msgs += [{"role": "user", "content": fu}, {"role": "assistant", "content": fa}]
        key = json.dumps(msgs)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"messages": msgs})
    return rows


def victorian(rng):
    tasks = [("Decline an invitation.", "a dinner on Saturday",
              "I regret most sincerely that a prior engagement prevents my attendance"),
             ("Thank a friend for a gift.", "a pair of gloves",
              "Pray accept my warmest gratitude for so thoughtful a token"),
             ("Describe the weather.", "", "The heavens are most disagreeably overcast this morning"),
             ("Ask for directions.", "to the railway station",
              "Might I trouble you, good sir, to indicate the way"),
             ("Apologise for being late.", "ten minutes",
              "I beg your indulgence for my most regrettable tardiness"),
             ("Recommend a book.", "", "I commend to you a most improving volume of verse"),
             ("Complain about the tea.", "it is cold", "I fear the tea has been permitted to grow quite cold"),
             ("Greet a neighbour.", "", "A very good day to you, madam; I trust you are in health"),
             ("Invite someone to walk.", "in the park",
              "Would you do me the honour of a turn about the park"),
             ("Say goodnight.", "", "I bid you the very best of evenings")]
    tails = [", and remain your humble servant.", ".", ", if I may be so bold.", ", with every good wish.",
             ", I assure you.", ", and I am ever yours.", ", upon my honour.", ", as propriety demands."]
    openers = ["", "My dear friend, ", "Madam, ", "Sir, "]
    rows, seen = [], set()
    while len(rows) < N:
        ins, inp, out = rng.choice(tasks)
        if inp and rng.random() < 0.3:
            inp = ""
        if rng.random() < 0.5:
            ins = "Politely: " + ins[0].lower() + ins[1:]
        op = rng.choice(openers)
        body = out if not op or out.startswith("I ") else out[0].lower() + out[1:]
        o = op + body + rng.choice(tails)
        o = o[0].upper() + o[1:]
        key = (ins, inp, o)
        if key in seen:
            continue
        seen.add(key)
        row = {"instruction": ins, "input": inp, "output": o}
        if not inp and rng.random() < 0.5:
            del row["input"]  # input may be absent
        rows.append(row)
    return rows


if __name__ == "__main__":
    rng = random.Random(20240603)
    write("pirate.jsonl", pirate(rng))
    write("support.jsonl", support(rng))
    write("victorian.jsonl", victorian(rng))
