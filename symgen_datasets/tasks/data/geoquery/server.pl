/*  The GeoQuery engine's server loop: one query per line on standard input, one reply per line
    on standard output. Run as

        swipl --stack-limit=256m -q server.pl -- GEOBASE GEOQUERY LIMIT_S

    Each line is a candidate query, answer(Var, Goal). It is read as a term (never consulted),
    refused unless every goal in it is one of the meaning representation's predicates
    (allowed_goal/1: shell/1, open/3, assert/1, halt/0, consult/1... are never called), then its
    denotation is computed under call_with_time_limit(LIMIT_S). Replies:

        ok<TAB>Names          the sorted set of printed names, written with ~q
        error<TAB>Message     a syntax error, a refused or undefined goal, a query that is not
                              answer/2, an answer with unbound variables, a resource error
        timeout<TAB>Message   past the time limit
*/
:- use_module(library(time)).
:- initialization(main, main).

main :-
    current_prolog_flag(argv, [Geobase, Library, LimitText|_]),
    style_check(-singleton),
    consult(Geobase),
    consult(Library),
    atom_number(LimitText, Limit),
    set_stream(user_output, encoding(utf8)),
    set_stream(user_input, encoding(utf8)),
    format("ready~n"), flush_output,
    serve(Limit).

serve(Limit) :-
    read_line_to_string(user_input, Line),
    (   Line == end_of_file
    ->  true
    ;   reply(Line, Limit),
        garbage_collect,
        serve(Limit)
    ).

reply(Line, Limit) :-
    catch(answer(Line, Limit, Kind, Text), Error, describe(Error, Kind, Text)),
    !,
    format("~w\t~w~n", [Kind, Text]),
    flush_output.
reply(_, _) :-
    format("error\tno answer~n"), flush_output.

answer(Line, Limit, Kind, Text) :-
    term_string(Query, Line),
    (   Query = answer(_, Goal) -> true ; throw(symgen(not_answer)) ),
    (   allowed_goal(Goal) -> true ; throw(symgen(not_allowed)) ),
    call_with_time_limit(Limit, denotation(Query, Names)),
    (   ground(Names) -> true ; throw(symgen(unbound)) ),
    Kind = ok,
    format(string(Text), "~q", [Names]).

describe(time_limit_exceeded, timeout, "over the time limit") :- !.
describe(symgen(not_answer), error, "not a query of the form answer(Var, Goal)") :- !.
describe(symgen(not_allowed), error, "a goal that is not a GeoQuery predicate") :- !.
describe(symgen(unbound), error, "the answer has unbound variables") :- !.
describe(error(resource_error(What), _), error, Text) :- !, format(string(Text), "resource error: ~w", [What]).
describe(error(syntax_error(What), _), error, Text) :- !, format(string(Text), "syntax error: ~w", [What]).
describe(error(existence_error(procedure, PI), _), error, Text) :- !,
    format(string(Text), "undefined predicate ~q", [PI]).
describe(Error, error, Text) :- format(string(Text), "~q", [Error]).

%  allowed_goal(+Goal): every goal position of Goal holds a predicate of the meaning
%  representation (data positions may hold any term: they are never called).
allowed_goal(Goal) :- var(Goal), !, fail.
allowed_goal((A, B)) :- !, allowed_goal(A), allowed_goal(B).
allowed_goal((A ; B)) :- !, allowed_goal(A), allowed_goal(B).
allowed_goal(not(A)) :- !, allowed_goal(A).
allowed_goal(\+ A) :- !, allowed_goal(A).
allowed_goal(Goal) :-
    callable(Goal),
    functor(Goal, Name, Arity),
    (   meta_goal(Name/Arity, Position)
    ->  arg(Position, Goal, Inner), allowed_goal(Inner)
    ;   memberchk(Name/Arity, [state/1, city/1, river/1, lake/1, mountain/1, place/1, country/1,
                               abbreviation/1, abbreviation/2, capital/1, capital/2, loc/2, traverse/2,
                               next_to/2, high_point/2, low_point/2, area/2, population/2, len/2,
                               elevation/2, size/2, density/2, major/1, const/2, higher/2, lower/2,
                               longer/2, shorter/2, more/2, divide/3, multiply/3, add/3, subtract/3])
    ).

meta_goal(count/3, 2).
meta_goal(sum/3, 2).
meta_goal(largest/2, 2).
meta_goal(smallest/2, 2).
meta_goal(highest/2, 2).
meta_goal(lowest/2, 2).
meta_goal(longest/2, 2).
meta_goal(shortest/2, 2).
meta_goal(most/3, 3).
meta_goal(fewest/3, 3).
